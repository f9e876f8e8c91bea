/**
 * Turns one YAML document in envoyproxy/ratelimit's format (plus Portico's extensions, listed in
 * the README) into a DomainConfig. Every problem is reported with its file, path and line; keys
 * that are in neither format are errors, as upstream, so that a typo never silently drops a limit.
 */
import { LineCounter, parseDocument, type Document } from "yaml";
import type { ConfigIssue } from "./errors.js";
import {
  compositeKey,
  levelOf,
  type Algorithm,
  type DescriptorLevel,
  type DescriptorNode,
  type DomainConfig,
  type LimitRule,
  type LimitSet,
  type PlanSelector,
  type Unit,
} from "./types.js";
import { CALENDAR_UNITS, parseUnit, parseWindow, UNIT_MS, UNITS } from "./units.js";
import { wildcardPattern } from "./wildcard.js";

type Path = (string | number)[];
/** A config value as the YAML reader gives it: every scalar a string, as written. */
export type Plain = string | Plain[] | { [k: string]: Plain } | null;

const MAX_UINT32 = 4_294_967_295;

const DOMAIN_KEYS = new Set(["domain", "descriptors"]);
const DESCRIPTOR_KEYS = new Set([
  // envoyproxy/ratelimit
  "key",
  "value",
  "rate_limit",
  "descriptors",
  "shadow_mode",
  "detailed_metric",
  "value_to_metric",
  "share_threshold",
  "quota_mode",
  // Portico
  "rate_limits",
  "count_refused",
  "plans",
  "plan_key",
]);
const LIMIT_KEYS = new Set([
  // envoyproxy/ratelimit
  "unit",
  "requests_per_unit",
  "unlimited",
  "name",
  "replaces",
  // Portico
  "unit_multiplier",
  "window",
  "algorithm",
  "burst",
  "calendar",
  "time_zone",
  "shadow_mode",
]);
const PLAN_KEYS = new Set(["rate_limit", "rate_limits"]);
const ALGORITHMS: Record<string, Algorithm> = {
  fixed_window: "fixed_window",
  sliding_window: "sliding_window",
  token_bucket: "token_bucket",
  gcra: "token_bucket",
};

class Ctx {
  readonly issues: ConfigIssue[] = [];
  domain = "";

  constructor(
    readonly file: string,
    /** Where a path is in the text, for configs read from a file. */
    private readonly lineOf: (path: Path) => number | undefined = () => undefined,
  ) {}

  issue(path: Path, reason: string): void {
    this.issues.push({ file: this.file, path: formatPath(path), line: this.lineOf(path), reason });
  }
}

function yamlLines(doc: Document, lines: LineCounter): (path: Path) => number | undefined {
  return (path) => {
    for (let p = path; ; p = p.slice(0, -1)) {
      const node = doc.getIn(p, true) as { range?: [number, number, number] } | undefined;
      if (node?.range) return lines.linePos(node.range[0]).line;
      if (p.length === 0) return undefined;
    }
  };
}

export function formatPath(path: Path): string {
  let out = "";
  for (const part of path) out += typeof part === "number" ? `[${part}]` : out ? `.${part}` : part;
  return out;
}

/** Parses one file's text. Returns the domain, or undefined with the problems in `issues`. */
export function parseDomainYaml(text: string, file: string, issues: ConfigIssue[]): DomainConfig | undefined {
  const lines = new LineCounter();
  // Every scalar stays a string, as written: `value: 0.10` must not become "0.1".
  const doc = parseDocument(text, { schema: "failsafe", lineCounter: lines, uniqueKeys: true });
  const before = issues.length;
  for (const e of doc.errors) {
    issues.push({ file, path: "", line: e.linePos?.[0]?.line, reason: e.message.split("\n")[0]! });
  }
  if (issues.length > before) return undefined;
  return parseDomainValue(doc.toJS() as Plain, file, issues, yamlLines(doc, lines));
}

/**
 * Parses one domain given as a plain value shaped like the YAML (maps, lists and every scalar as a
 * string), e.g. a document received from the control plane: the same checks, the same errors.
 */
export function parseDomainValue(
  value: Plain,
  file: string,
  issues: ConfigIssue[],
  lineOf?: (path: Path) => number | undefined,
): DomainConfig | undefined {
  const ctx = new Ctx(file, lineOf);
  const result = parseDomain(value, ctx);
  issues.push(...ctx.issues);
  return ctx.issues.length === 0 ? result : undefined;
}

function parseDomain(top: Plain, ctx: Ctx): DomainConfig | undefined {
  if (!isMap(top)) {
    ctx.issue([], "a rate-limit config file must be a map with `domain` and `descriptors`");
    return undefined;
  }
  checkKeys(top, DOMAIN_KEYS, [], ctx);
  const domain = scalar(top.domain, ["domain"], ctx);
  if (!domain) {
    ctx.issue(["domain"], "config file cannot have empty domain");
    return undefined;
  }
  ctx.domain = domain;
  const root = parseLevel(top.descriptors, ["descriptors"], "", ctx);
  return { domain, file: ctx.file, root };
}

function parseLevel(list: Plain | undefined, path: Path, parentPath: string, ctx: Ctx): DescriptorLevel {
  if (list === undefined || list === null || list === "") return levelOf([]);
  if (!Array.isArray(list)) {
    ctx.issue(path, "must be a list of descriptors");
    return levelOf([]);
  }
  const seen = new Set<string>();
  const nodes: DescriptorNode[] = [];
  list.forEach((item, i) => {
    const node = parseDescriptor(item, [...path, i], parentPath, ctx);
    if (!node) return;
    const composite = compositeKey(node);
    if (seen.has(composite)) {
      ctx.issue([...path, i], `duplicate descriptor composite key '${ctx.domain}.${composite}'`);
      return;
    }
    seen.add(composite);
    nodes.push(node);
  });
  return levelOf(nodes);
}

function parseDescriptor(item: Plain, path: Path, parentPath: string, ctx: Ctx): DescriptorNode | undefined {
  if (!isMap(item)) {
    ctx.issue(path, "a descriptor must be a map with at least `key`");
    return undefined;
  }
  checkKeys(item, DESCRIPTOR_KEYS, path, ctx);
  const key = scalar(item.key, [...path, "key"], ctx);
  if (!key) {
    ctx.issue([...path, "key"], "descriptor has empty key");
    return undefined;
  }
  const value = scalar(item.value, [...path, "value"], ctx) || undefined;
  const wildcard = value === undefined ? undefined : wildcardPattern(value);
  const nodePath = (parentPath ? `${parentPath}.` : "") + (value === undefined ? key : `${key}=${value}`);
  const shadowMode = bool(item.shadow_mode, [...path, "shadow_mode"], ctx) ?? false;
  const detailedMetric =
    (bool(item.detailed_metric, [...path, "detailed_metric"], ctx) ?? false) ||
    (bool(item.value_to_metric, [...path, "value_to_metric"], ctx) ?? false);
  const shareThreshold = bool(item.share_threshold, [...path, "share_threshold"], ctx) ?? false;
  if (shareThreshold && !wildcard) {
    ctx.issue(
      [...path, "share_threshold"],
      "share_threshold can only be used with a wildcard value (one with a '*')",
    );
  }
  const quotaMode = bool(item.quota_mode, [...path, "quota_mode"], ctx) ?? false;
  const countRefused = bool(item.count_refused, [...path, "count_refused"], ctx) ?? true;
  const set = parseLimitSet(item, path, nodePath, shadowMode, ctx);

  let plans: PlanSelector | undefined;
  if (item.plans !== undefined) {
    plans = parsePlans(item, path, nodePath, shadowMode, ctx);
  } else if (item.plan_key !== undefined) {
    ctx.issue([...path, "plan_key"], "plan_key needs `plans`");
  }
  const children = parseLevel(item.descriptors, [...path, "descriptors"], nodePath, ctx);
  return {
    key,
    value,
    wildcard,
    ...set,
    detailedMetric,
    shareThreshold,
    quotaMode,
    countRefused,
    plans,
    path: nodePath,
    children,
  };
}

function parsePlans(
  item: { [k: string]: Plain },
  path: Path,
  nodePath: string,
  shadowMode: boolean,
  ctx: Ctx,
): PlanSelector | undefined {
  const key = item.plan_key === undefined ? "plan" : scalar(item.plan_key, [...path, "plan_key"], ctx);
  if (!key) {
    ctx.issue([...path, "plan_key"], "must be a non-empty string");
    return undefined;
  }
  const raw = item.plans;
  if (!isMap(raw) || Object.keys(raw).length === 0) {
    ctx.issue([...path, "plans"], "must map plan names to `rate_limit` or `rate_limits`");
    return undefined;
  }
  const plans = new Map<string, LimitSet>();
  for (const [name, body] of Object.entries(raw)) {
    const p = [...path, "plans", name];
    if (!isMap(body)) {
      ctx.issue(p, "a plan must be a map with `rate_limit` or `rate_limits`");
      continue;
    }
    checkKeys(body, PLAN_KEYS, p, ctx);
    const set = parseLimitSet(body, p, `${nodePath}/${key}=${name}`, shadowMode, ctx);
    if (set.limits.length === 0 && !set.unlimited) ctx.issue(p, "a plan needs `rate_limit` or `rate_limits`");
    plans.set(name, set);
  }
  return { key, plans };
}

/** `rate_limit` (upstream) or `rate_limits` (Portico: several limits on one descriptor). */
function parseLimitSet(
  item: { [k: string]: Plain },
  path: Path,
  nodePath: string,
  shadowMode: boolean,
  ctx: Ctx,
): LimitSet {
  const single = item.rate_limit;
  const list = item.rate_limits;
  if (single !== undefined && list !== undefined) {
    ctx.issue([...path, "rate_limits"], "give either `rate_limit` or `rate_limits`, not both");
    return { limits: [], unlimited: false, replaces: [] };
  }
  let entries: { raw: Plain; path: Path }[] = [];
  if (single !== undefined && single !== "") {
    entries = [{ raw: single, path: [...path, "rate_limit"] }];
  } else if (list !== undefined) {
    if (!Array.isArray(list) || list.length === 0) {
      ctx.issue([...path, "rate_limits"], "must be a non-empty list of limits");
      return { limits: [], unlimited: false, replaces: [] };
    }
    entries = list.map((raw, i) => ({ raw, path: [...path, "rate_limits", i] }));
  }
  const limits: LimitRule[] = [];
  const replaces: string[] = [];
  let unlimited = false;
  entries.forEach(({ raw, path: p }, i) => {
    const label = entries.length > 1 ? `${nodePath}[${i}]` : nodePath;
    const parsed = parseLimit(raw, p, label, shadowMode, ctx);
    if (!parsed) return;
    replaces.push(...parsed.replaces);
    if (parsed.unlimited) unlimited = true;
    else limits.push(parsed.rule);
  });
  if (unlimited && entries.length > 1) {
    ctx.issue([...path, "rate_limits"], "an unlimited rule cannot be combined with other limits");
  }
  const ids = new Set<string>();
  for (const [i, r] of limits.entries()) {
    if (ids.has(r.counterId)) {
      ctx.issue(
        [...path, "rate_limits", i],
        "two limits with the same algorithm and window on one descriptor would share a counter: keep the smaller one",
      );
    }
    ids.add(r.counterId);
  }
  return { limits, unlimited, replaces };
}

type ParsedLimit =
  { unlimited: true; replaces: string[] } | { unlimited: false; replaces: string[]; rule: LimitRule };

function parseLimit(
  raw: Plain,
  path: Path,
  label: string,
  shadowDefault: boolean,
  ctx: Ctx,
): ParsedLimit | undefined {
  if (!isMap(raw)) {
    ctx.issue(path, "a rate limit must be a map");
    return undefined;
  }
  const before = ctx.issues.length;
  checkKeys(raw, LIMIT_KEYS, path, ctx);
  const at = (k: string): Path => [...path, k];
  const name = scalar(raw.name, at("name"), ctx) || undefined;
  const replaces = parseReplaces(raw.replaces, at("replaces"), ctx);
  if (name !== undefined && replaces.includes(name)) {
    ctx.issue(at("replaces"), `replaces should not contain the rule's own name '${name}'`);
  }
  const unlimited = bool(raw.unlimited, at("unlimited"), ctx) ?? false;
  if (unlimited) {
    for (const k of Object.keys(raw)) {
      if (!["unlimited", "name", "replaces"].includes(k)) {
        ctx.issue(at(k), `should not specify rate limit ${k} when unlimited`);
      }
    }
    return ctx.issues.length === before ? { unlimited: true, replaces } : undefined;
  }

  let unit: Unit | undefined;
  let multiplier = 1;
  if (raw.window !== undefined) {
    if (raw.unit !== undefined || raw.unit_multiplier !== undefined) {
      ctx.issue(at("window"), "give either `window` or `unit` (with `unit_multiplier`), not both");
    }
    const w = parseWindow(scalar(raw.window, at("window"), ctx) ?? "");
    if (!w) ctx.issue(at("window"), "must be a whole number followed by s, m, h, d or w, e.g. 30s or 5m");
    else ({ unit, multiplier } = w);
  } else {
    const text = scalar(raw.unit, at("unit"), ctx);
    if (!text) ctx.issue(at("unit"), `rate limit unit is required (${UNITS.join(", ")})`);
    else {
      unit = parseUnit(text);
      if (!unit) ctx.issue(at("unit"), `invalid rate limit unit '${text}' (use ${UNITS.join(", ")})`);
    }
    if (raw.unit_multiplier !== undefined) {
      const m = uint(raw.unit_multiplier, at("unit_multiplier"), ctx);
      if (m !== undefined && m < 1) ctx.issue(at("unit_multiplier"), "must be at least 1");
      else if (m !== undefined) multiplier = m;
    }
  }
  const requestsPerUnit = uint(raw.requests_per_unit, at("requests_per_unit"), ctx);
  if (raw.requests_per_unit === undefined)
    ctx.issue(at("requests_per_unit"), "requests_per_unit is required");

  const algoText = scalar(raw.algorithm, at("algorithm"), ctx);
  let algorithm: Algorithm = "fixed_window";
  if (algoText !== undefined) {
    const a = ALGORITHMS[algoText.trim().toLowerCase()];
    if (!a)
      ctx.issue(
        at("algorithm"),
        `unknown algorithm '${algoText}' (use ${Object.keys(ALGORITHMS).join(", ")})`,
      );
    else algorithm = a;
  }
  let burst = requestsPerUnit ?? 0;
  if (raw.burst !== undefined) {
    const b = uint(raw.burst, at("burst"), ctx);
    if (algorithm !== "token_bucket")
      ctx.issue(at("burst"), "burst applies to the token_bucket algorithm only");
    else if (b !== undefined && b < 1) ctx.issue(at("burst"), "must be at least 1");
    else if (b !== undefined) burst = b;
  }
  if (algorithm === "token_bucket" && requestsPerUnit === 0) {
    ctx.issue(
      at("requests_per_unit"),
      "a token bucket needs a rate above 0 (use a fixed window of 0 to block)",
    );
  }

  const calendar = bool(raw.calendar, at("calendar"), ctx) ?? false;
  let timeZone = "UTC";
  if (raw.time_zone !== undefined) {
    const tz = scalar(raw.time_zone, at("time_zone"), ctx) ?? "";
    if (!calendar) ctx.issue(at("time_zone"), "time_zone applies to calendar quotas only (calendar: true)");
    else if (!validTimeZone(tz))
      ctx.issue(at("time_zone"), `unknown time zone '${tz}' (an IANA name such as Europe/Paris)`);
    else timeZone = tz;
  }
  if (calendar) {
    if (unit && !CALENDAR_UNITS.includes(unit)) {
      ctx.issue(at("calendar"), `calendar quotas count ${CALENDAR_UNITS.join(", ")}, not ${unit}`);
    }
    if (algorithm !== "fixed_window") {
      ctx.issue(at("algorithm"), "calendar quotas are exact counters: leave algorithm unset");
    }
  }
  const shadowMode = bool(raw.shadow_mode, at("shadow_mode"), ctx) ?? shadowDefault;
  if (ctx.issues.length > before || unit === undefined || requestsPerUnit === undefined) return undefined;

  const windowMs = UNIT_MS[unit] * multiplier;
  const counterId = calendar
    ? `cal.${multiplier}${unit}.${timeZone}`
    : `${algorithm === "fixed_window" ? "fw" : algorithm === "sliding_window" ? "sw" : "tb"}.${windowMs}`;
  const rule: LimitRule = {
    source: `${ctx.file}: ${formatPath(path)}`,
    domain: ctx.domain,
    metricName: name ?? label,
    name,
    replaces,
    requestsPerUnit,
    unit,
    unitMultiplier: multiplier,
    windowMs,
    algorithm,
    burst,
    calendar: calendar ? { timeZone } : undefined,
    shadowMode,
    counterId,
  };
  return { unlimited: false, replaces, rule };
}

function parseReplaces(raw: Plain | undefined, path: Path, ctx: Ctx): string[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) {
    ctx.issue(path, "must be a list of `- name: <rule name>`");
    return [];
  }
  const out: string[] = [];
  raw.forEach((r, i) => {
    const name = isMap(r) ? scalar(r.name, [...path, i, "name"], ctx) : undefined;
    if (isMap(r)) checkKeys(r, new Set(["name"]), [...path, i], ctx);
    if (!name) ctx.issue([...path, i], "should not have an empty replaces entry: give `name`");
    else out.push(name);
  });
  return out;
}

function validTimeZone(tz: string): boolean {
  if (!tz) return false;
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

function isMap(v: Plain | undefined): v is { [k: string]: Plain } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkKeys(obj: { [k: string]: Plain }, allowed: Set<string>, path: Path, ctx: Ctx): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k)) ctx.issue([...path, k], `unknown key '${k}' (allowed: ${[...allowed].join(", ")})`);
  }
}

function scalar(v: Plain | undefined, path: Path, ctx: Ctx): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") {
    ctx.issue(path, "must be a single value, not a list or map");
    return undefined;
  }
  return v === "~" || v === "null" ? "" : v;
}

function bool(v: Plain | undefined, path: Path, ctx: Ctx): boolean | undefined {
  const s = scalar(v, path, ctx);
  if (s === undefined || s === "") return undefined;
  // Upstream reads YAML 1.1 (yes/no/on/off are booleans there).
  const t = s.trim().toLowerCase();
  if (["true", "yes", "on", "y"].includes(t)) return true;
  if (["false", "no", "off", "n"].includes(t)) return false;
  ctx.issue(path, `must be true or false, got '${s}'`);
  return undefined;
}

function uint(v: Plain | undefined, path: Path, ctx: Ctx): number | undefined {
  const s = scalar(v, path, ctx);
  if (s === undefined || s === "") return undefined;
  const t = s.trim().replace(/_/g, "");
  const n = /^\d+$/.test(t) ? Number(t) : NaN;
  if (!Number.isSafeInteger(n) || n > MAX_UINT32) {
    ctx.issue(path, `must be a whole number from 0 to ${MAX_UINT32}, got '${s}'`);
    return undefined;
  }
  return n;
}
