import type { z } from "zod";
import {
  matchPath,
  parsePartTemplate,
  parsePathPattern,
  type PartTemplate,
  type PathPattern,
  compositeProblems,
  RouteSpecSchema,
  type FieldProblem,
  type RouteSpec,
} from "@portico/contract";

export interface CompiledPart {
  readonly key: string;
  readonly upstream: string;
  readonly template: PartTemplate;
  readonly timeoutMs: number;
  readonly required: boolean;
  /** How old a last good answer may be to stand in for a failed call; no fallback when absent. */
  readonly staleMaxAgeMs?: number;
}

export interface CompiledRoute {
  readonly name: string;
  readonly gateway: string;
  readonly pattern: PathPattern;
  readonly methods: ReadonlySet<string>;
  readonly timeoutMs: number;
  /** Base URL of the parts listener, without a trailing '/'. */
  readonly partsUrl: string;
  readonly parts: readonly CompiledPart[];
}

/** The running config: immutable, swapped whole when a new one arrives. */
export interface AggregatorConfig {
  readonly routes: ReadonlyMap<string, CompiledRoute>;
  /** Routes in the order a path is tried against them: fewest parameters first. */
  readonly byPath: readonly CompiledRoute[];
}

export type Compiled = { ok: true; value: AggregatorConfig } | { ok: false; problems: FieldProblem[] };

/** A zod issue path as a field name: `parts[0].timeoutMs`. */
export function fieldOf(at: string, path: readonly PropertyKey[]): string {
  let out = at;
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || "(document)";
}

export function zodProblems(at: string, error: z.ZodError): FieldProblem[] {
  return error.issues.map((i) => ({ field: fieldOf(at, i.path), reason: i.message }));
}

function compileRoute(spec: RouteSpec): CompiledRoute {
  // Only called once compositeProblems() found nothing, so both parse.
  const pattern = parsePathPattern(spec.match.path);
  if (!pattern.ok) throw new Error(pattern.reason);
  return {
    name: spec.name,
    gateway: spec.gateway,
    pattern: pattern.value,
    methods: new Set(spec.match.methods),
    timeoutMs: spec.timeoutMs,
    partsUrl: spec.partsUrl.replace(/\/+$/, ""),
    parts: spec.parts.map((p) => {
      const template = parsePartTemplate(p.path);
      if (!template.ok) throw new Error(template.reason);
      return {
        key: p.key,
        upstream: p.upstream,
        template: template.value,
        timeoutMs: p.timeoutMs,
        required: p.required,
        ...(p.staleFallback ? { staleMaxAgeMs: p.staleFallback.maxAgeSeconds * 1000 } : {}),
      };
    }),
  };
}

/**
 * Route specs (each with the field its problems are reported under) → a running config, or every
 * problem found. Nothing is half-applied: one bad route refuses the whole set.
 */
export function compileRoutes(inputs: readonly { at: string; value: unknown }[]): Compiled {
  const problems: FieldProblem[] = [];
  const specs: { at: string; spec: RouteSpec }[] = [];
  for (const { at, value } of inputs) {
    const parsed = RouteSpecSchema.safeParse(value);
    if (!parsed.success) {
      problems.push(...zodProblems(at, parsed.error));
      continue;
    }
    const found = compositeProblems(parsed.data, at);
    if (found.length) problems.push(...found);
    else specs.push({ at, spec: parsed.data });
  }
  const names = new Map<string, string>();
  const paths = new Map<string, string>();
  for (const { at, spec } of specs) {
    const other = names.get(spec.name);
    if (other)
      problems.push({ field: `${at}.name`, reason: `'${spec.name}' is already the name of ${other}` });
    else names.set(spec.name, at);
    const key = `${spec.gateway}\n${spec.match.path.replace(/\{[^}]*\}/g, "{}")}`;
    const same = paths.get(key);
    if (same) problems.push({ field: `${at}.match.path`, reason: `${same} already serves this path` });
    else paths.set(key, at);
  }
  if (problems.length) return { ok: false, problems };
  const routes = specs.map(({ spec }) => compileRoute(spec)).sort((a, b) => (a.name < b.name ? -1 : 1));
  const byPath = [...routes].sort(
    (a, b) => a.pattern.params.length - b.pattern.params.length || (a.name < b.name ? -1 : 1),
  );
  return { ok: true, value: { routes: new Map(routes.map((r) => [r.name, r])), byPath } };
}

export const EMPTY_CONFIG: AggregatorConfig = { routes: new Map(), byPath: [] };

/**
 * The route a request is for. Envoy names it (`x-portico-composite`), since several gateways may
 * serve the same path; a direct call is matched by its path alone.
 */
export function findRoute(
  config: AggregatorConfig,
  named: string | undefined,
  path: string,
): { route: CompiledRoute; params: Record<string, string> } | undefined {
  const candidates =
    named !== undefined ? [config.routes.get(named)].filter((r) => r !== undefined) : config.byPath;
  for (const route of candidates) {
    const params = matchPath(route.pattern, path);
    if (params) return { route, params };
  }
  return undefined;
}
