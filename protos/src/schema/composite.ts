import { z } from "zod";
import type { FieldProblem } from "./problems.js";
import { Name } from "./name.js";
import { RetrySchema } from "./retry.js";
import { parsePartTemplate, parsePathPattern } from "./composite-template.js";

/**
 * A part's key is a key of the merged JSON object and an item of the `x-portico-partial` header:
 * no commas, no spaces, and no leading `_` (the aggregator's own `_missing` and `_stale`).
 */
export const PartKey = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_-]{0,63}$/, "use 1-64 letters, digits, '_' or '-', starting with a letter");

/** Composite routes answer reads: a client's GET (or HEAD) fans out to GETs. */
export const CompositeMethod = z.enum(["GET", "HEAD"]);

/** Longest deadline of a composite route or a part. */
export const MAX_TIMEOUT_MS = 600_000;
const Timeout = z
  .number()
  .int("must be a whole number of milliseconds")
  .min(1)
  .max(MAX_TIMEOUT_MS, `at most ${MAX_TIMEOUT_MS} ms`);

export const StaleFallbackSchema = z
  .object({ maxAgeSeconds: z.number().int().min(1).max(604_800, "at most a week") })
  .strict();

export const PartSpecSchema = z
  .object({
    key: PartKey,
    upstream: z.string().min(1),
    path: z.string().min(1),
    method: z.literal("GET").default("GET"),
    timeoutMs: Timeout,
    required: z.boolean().default(false),
    staleFallback: StaleFallbackSchema.optional(),
  })
  .strict();

/** One composite route as the aggregator runs it: from the control plane, or from a YAML file. */
export const RouteSpecSchema = z
  .object({
    name: z.string().min(1),
    gateway: z.string().default(""),
    match: z
      .object({ path: z.string().min(1), methods: z.array(CompositeMethod).min(1).default(["GET"]) })
      .strict(),
    timeoutMs: Timeout,
    /** Where the parts are called: Envoy's parts listener, e.g. http://127.0.0.1:10001. */
    partsUrl: z.url({ protocol: /^https?$/ }),
    parts: z.array(PartSpecSchema).min(1, "a composite route needs at least one part").max(32),
  })
  .strict();

/** The static file: routes, with a `partsUrl` they share unless they give their own. */
export const FileSpecSchema = z
  .object({
    partsUrl: z.url({ protocol: /^https?$/ }).optional(),
    routes: z.array(z.record(z.string(), z.unknown())).default([]),
  })
  .strict();

export type PartSpec = z.infer<typeof PartSpecSchema>;
export type RouteSpec = z.infer<typeof RouteSpecSchema>;

/** What the shared rules read; the control plane's model and the aggregator's spec both have it. */
export interface CompositeShape {
  match: { path: string };
  timeoutMs: number;
  parts: readonly { key: string; path: string; timeoutMs: number }[];
}

/**
 * The rules a composite route must follow beyond its shape, reported with fields under `at`
 * (e.g. `compositeRoutes[2]`): a path the aggregator can match, unique part keys, part deadlines
 * under the route's (so a slow part is cut before the client's call is), and part paths that use
 * only parameters the route's path has.
 */
export function compositeProblems(r: CompositeShape, at: string): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const pattern = parsePathPattern(r.match.path);
  if (!pattern.ok) problems.push({ field: `${at}.match.path`, reason: pattern.reason });
  const seen = new Map<string, number>();
  r.parts.forEach((p, i) => {
    const field = `${at}.parts[${i}]`;
    const first = seen.get(p.key);
    if (first !== undefined)
      problems.push({ field: `${field}.key`, reason: `key '${p.key}' is already used by parts[${first}]` });
    else seen.set(p.key, i);
    if (p.timeoutMs >= r.timeoutMs) {
      problems.push({
        field: `${field}.timeoutMs`,
        reason: `${p.timeoutMs} ms is not under the route's timeoutMs (${r.timeoutMs} ms)`,
      });
    }
    const template = parsePartTemplate(p.path);
    if (!template.ok) {
      problems.push({ field: `${field}.path`, reason: template.reason });
      return;
    }
    if (!pattern.ok) return;
    for (const name of template.value.params) {
      if (!pattern.value.params.includes(name)) {
        problems.push({
          field: `${field}.path`,
          reason: `{${name}} is not a parameter of the route's path '${r.match.path}'`,
        });
      }
    }
  });
  return problems;
}

const CompositeTimeout = z
  .number()
  .int("must be a whole number of milliseconds")
  .min(1)
  .max(MAX_TIMEOUT_MS, `at most ${MAX_TIMEOUT_MS} ms`);

export const CompositePartSchema = z
  .object({
    /** The part's key in the merged answer. */
    key: PartKey,
    upstream: Name,
    /** The path called: `{param}` from the route's path, `{header.<name>}` from the request. */
    path: z.string().startsWith("/", "must start with '/'"),
    method: z.literal("GET").default("GET"),
    /** The part's deadline; under the route's. */
    timeoutMs: CompositeTimeout,
    /** A required part that fails fails the call (502, or 504 on timeout); others are left out. */
    required: z.boolean().default(false),
    /** Retries by Envoy on the part's call; the part's timeoutMs includes them. */
    retries: RetrySchema.optional(),
    /** Serve the part's last good answer, at most this old, when it fails. */
    staleFallback: StaleFallbackSchema.optional(),
  })
  .strict();

/** One client call fanned out to several upstreams by the aggregator, the answers merged into one. */
export const CompositeRouteSchema = z
  .object({
    name: Name,
    gateway: Name,
    /** One listener of the gateway; every listener of the gateway when omitted. */
    listener: Name.optional(),
    match: z
      .object({
        /** Literal segments and `{param}` segments, e.g. `/users/{id}/home`. */
        path: z.string().startsWith("/", "must start with '/'"),
        methods: z.array(CompositeMethod).min(1).default(["GET"]),
      })
      .strict(),
    /** The deadline of the whole call. */
    timeoutMs: CompositeTimeout,
    parts: z.array(CompositePartSchema).min(1, "a composite route needs at least one part").max(32),
    authPolicy: Name.optional(),
    rateLimitPolicy: Name.optional(),
  })
  .strict();
