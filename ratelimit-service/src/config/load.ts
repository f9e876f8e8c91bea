import fs from "node:fs";
import path from "node:path";
import { ConfigError, type ConfigIssue } from "./errors.js";
import { parseDomainValue, parseDomainYaml, type Plain } from "./parse.js";
import {
  compositeKey,
  levelNodes,
  levelOf,
  type DescriptorNode,
  type DomainConfig,
  type RateLimitConfig,
} from "./types.js";

/** A file's text, or a document already read (from the control plane), shaped like the YAML. */
export type ConfigSource =
  | {
      /** A name for errors: the file path, or where the text came from. */
      readonly file: string;
      readonly text: string;
    }
  | { readonly file: string; readonly value: Plain };

export interface LoadOptions {
  /**
   * Upstream's MERGE_DOMAIN_CONFIG: files that name the same domain add their top-level rules to
   * it (a rule already there is still an error), instead of being refused as a duplicate domain.
   */
  readonly mergeDomains?: boolean;
}

/**
 * Reads a config file, or every `.yaml`/`.yml` file of a directory (not its subdirectories),
 * in name order, the way envoyproxy/ratelimit reads its runtime directory. Throws ConfigError
 * listing every problem, never a half-loaded config.
 */
export function loadConfig(configPath: string, opts: LoadOptions = {}): RateLimitConfig {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(configPath);
  } catch (err) {
    throw new ConfigError([{ file: configPath, path: "", reason: `cannot read: ${(err as Error).message}` }]);
  }
  const files = stat.isDirectory()
    ? fs
        .readdirSync(configPath, { withFileTypes: true })
        .filter((e) => e.isFile() && /\.ya?ml$/i.test(e.name))
        .map((e) => path.join(configPath, e.name))
        .sort()
    : [configPath];
  const sources: ConfigSource[] = [];
  const issues: ConfigIssue[] = [];
  for (const file of files) {
    try {
      sources.push({ file, text: fs.readFileSync(file, "utf8") });
    } catch (err) {
      issues.push({ file, path: "", reason: `cannot read: ${(err as Error).message}` });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return buildConfig(sources, opts);
}

/** Builds a config from texts (files, or documents received from the control plane). */
export function buildConfig(sources: readonly ConfigSource[], opts: LoadOptions = {}): RateLimitConfig {
  const issues: ConfigIssue[] = [];
  const domains = new Map<string, DomainConfig>();
  for (const src of sources) {
    if ("text" in src && src.text.trim() === "") continue;
    const domain =
      "text" in src
        ? parseDomainYaml(src.text, src.file, issues)
        : parseDomainValue(src.value, src.file, issues);
    if (!domain) continue;
    const other = domains.get(domain.domain);
    if (other && opts.mergeDomains) {
      const merged = mergeDomain(other, domain, src.file, issues);
      if (merged) domains.set(domain.domain, merged);
      continue;
    }
    if (other) {
      issues.push({
        file: src.file,
        path: "domain",
        reason: `duplicate domain '${domain.domain}' (also in ${other.file})`,
      });
      continue;
    }
    domains.set(domain.domain, domain);
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return { domains, files: sources.map((s) => s.file) };
}

/** `from`'s top-level rules added after `into`'s, as upstream merges a domain's files in order. */
function mergeDomain(
  into: DomainConfig,
  from: DomainConfig,
  file: string,
  issues: ConfigIssue[],
): DomainConfig | undefined {
  const taken = new Set(levelNodes(into.root).map(compositeKey));
  const added: DescriptorNode[] = [];
  for (const node of levelNodes(from.root)) {
    const name = compositeKey(node);
    if (taken.has(name)) {
      issues.push({
        file,
        path: "descriptors",
        reason: `duplicate descriptor composite key '${into.domain}.${name}' (also in ${into.file})`,
      });
      continue;
    }
    taken.add(name);
    added.push(node);
  }
  return added.length === levelNodes(from.root).length
    ? { ...into, root: levelOf([...levelNodes(into.root), ...added]) }
    : undefined;
}
