/**
 * The secrets of a config: written through the admin API, sealed at rest by the store, and never
 * read back. Reads show a redacted stand-in (a fingerprint and when the secret was first stored);
 * writing that stand-in back keeps the stored secret.
 */
import { createHash } from "node:crypto";
import { ConfigError, type FieldProblem } from "./errors.js";
import type { Config, Kind } from "./schema.js";

/** Where secrets sit: keys from the config's root, `*` for every item of an array. */
export const SECRET_PATHS: readonly (readonly string[])[] = [
  ["certificates", "*", "privateKeyPem"],
  ["certificates", "*", "sessionTicketKeys", "*"],
  ["jwtProviders", "*", "jwks", "keys", "*", "k"],
  ["oauthProviders", "*", "clientSecret"],
  ["gateways", "*", "aggregator", "partsToken"],
];

/** What reads show in place of a secret. */
export interface RedactedSecret {
  redacted: true;
  /** `sha256:` and the first 16 hex digits of the secret's SHA-256. */
  sha256: string;
  /** When the store first held this secret, when known. */
  createdAt?: string;
}

export function fingerprint(secret: string): string {
  return `sha256:${createHash("sha256").update(secret).digest("hex").slice(0, 16)}`;
}

export function isRedacted(value: unknown): value is RedactedSecret {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as { redacted?: unknown }).redacted === true &&
    typeof (value as { sha256?: unknown }).sha256 === "string"
  );
}

/** Sees one secret's value and its field (`certificates[0].privateKeyPem`); returns its replacement. */
export type SecretMapper = (value: unknown, field: string, pattern: string) => unknown;

function walk(
  value: unknown,
  path: readonly string[],
  i: number,
  field: string,
  pattern: string,
  fn: SecretMapper,
): unknown {
  if (i === path.length) return value === undefined ? value : fn(value, field, pattern);
  const step = path[i]!;
  if (step === "*") {
    if (!Array.isArray(value)) return value;
    return value.map((item, n) => walk(item, path, i + 1, `${field}[${n}]`, pattern, fn));
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || !(step in value)) return value;
  const inner = (value as Record<string, unknown>)[step];
  const next = walk(inner, path, i + 1, field ? `${field}.${step}` : step, pattern, fn);
  return next === inner ? value : { ...(value as object), [step]: next };
}

/**
 * A copy of a config (or of one resource of `kind`) with every secret replaced by `fn`'s answer;
 * the rest is shared, not copied.
 */
export function mapSecrets<T>(config: T, fn: SecretMapper, kind?: Kind): T {
  let out: unknown = config;
  for (const path of SECRET_PATHS) {
    if (kind !== undefined && path[0] !== kind) continue;
    const rest = kind !== undefined ? path.slice(2) : path;
    out = walk(out, rest, 0, "", path.join("."), fn);
  }
  return out as T;
}

/** Every secret of a config, by the pattern of its field and its fingerprint. */
function secretsOf(config: Config): Map<string, string> {
  const found = new Map<string, string>();
  mapSecrets(config, (value, _field, pattern) => {
    if (typeof value === "string") found.set(`${pattern}\n${fingerprint(value)}`, value);
    return value;
  });
  return found;
}

/** A config or resource as reads show it: each secret replaced by its fingerprint. */
export function redactSecrets<T>(value: T, createdAt: (fp: string) => string | undefined, kind?: Kind): T {
  return mapSecrets(
    value,
    (secret) => {
      if (typeof secret !== "string") return secret;
      const sha256 = fingerprint(secret);
      const at = createdAt(sha256);
      return {
        redacted: true,
        sha256,
        ...(at !== undefined ? { createdAt: at } : {}),
      } satisfies RedactedSecret;
    },
    kind,
  );
}

/**
 * A config or resource about to be written, with each redacted stand-in (as reads show it) replaced
 * by the stored secret it names, so a resource read and written back keeps its secrets. A stand-in
 * naming no stored secret is refused with its field.
 */
export function restoreSecrets<T>(value: T, stored: Config, kind?: Kind): T {
  const known = secretsOf(stored);
  const problems: FieldProblem[] = [];
  const out = mapSecrets(
    value,
    (secret, field, pattern) => {
      if (!isRedacted(secret)) return secret;
      const found = known.get(`${pattern}\n${secret.sha256}`);
      if (found === undefined) {
        problems.push({
          field,
          reason: `no stored secret has the fingerprint ${secret.sha256}; give the secret itself`,
        });
      }
      return found ?? secret;
    },
    kind,
  );
  if (problems.length > 0)
    throw new ConfigError("invalid_config", "the configuration is not valid", problems);
  return out;
}

/**
 * A config with each secret, in the clear or redacted, as its fingerprint: two configs compare
 * equal where their secrets are the same, and nothing secret is shown when they differ.
 */
export function fingerprintSecrets<T>(config: T): T {
  return mapSecrets(config, (value) =>
    typeof value === "string" ? fingerprint(value) : isRedacted(value) ? value.sha256 : value,
  );
}
