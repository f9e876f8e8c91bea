/**
 * The order in which Envoy tries a listener's routes, and the routes that order leaves out.
 * Envoy takes the first route that matches, so Portico sorts them by how specific they are:
 * exact paths (then composite path templates), then prefixes longest first, then regexes; within
 * the same kind of path, routes with more conditions (methods, headers, query parameters) first;
 * then `priority`, higher first; then the order of creation. A route that an earlier one takes
 * every request from is refused, since it could never answer.
 */
import { parsePathPattern, pathPatternRegex } from "@portico/contract";
import { RE2JS } from "re2js";
import type { CompositeRoute, Config, Route, RouteMatch } from "./schema.js";

/** A composite route's match as Envoy's route for it has it: a template path becomes an anchored regex. */
export function compositeMatch(c: CompositeRoute): { match: RouteMatch; template: boolean } {
  const pattern = parsePathPattern(c.match.path);
  // Validation refuses a path that does not parse; the order stays total all the same.
  if (!pattern.ok || pattern.value.params.length === 0)
    return { match: { path: c.match.path, methods: c.match.methods }, template: false };
  return { match: { pathRegex: pathPatternRegex(pattern.value), methods: c.match.methods }, template: true };
}

/** How many conditions besides the path a match has: its methods, each header and query matcher. */
function conditionCount(m: RouteMatch): number {
  return (m.methods ? 1 : 0) + (m.headers?.length ?? 0) + (m.query?.length ?? 0);
}

/**
 * A route's place as a sort key, lower first; equal keys keep the order of creation. `template`:
 * the regex stands for a path template, as specific as an exact path.
 */
export function matchRank(m: RouteMatch, priority = 0, template = false): number[] {
  const path =
    m.path !== undefined
      ? [0, 0]
      : template
        ? [0, 1]
        : m.pathPrefix !== undefined
          ? [1, -m.pathPrefix.length]
          : [2, 0];
  return [...path, -conditionCount(m), -priority];
}

function compareRanks(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

/** `items` in match order by `rankOf`; a stable sort, so ties keep the order given. */
export function inMatchOrder<T>(items: readonly T[], rankOf: (item: T) => number[]): T[] {
  return items
    .map((item, i) => ({ item, i, rank: rankOf(item) }))
    .sort((a, b) => compareRanks(a.rank, b.rank) || a.i - b.i)
    .map(({ item }) => item);
}

/** A route or a composite route, as ordering and shadowing read it. */
export interface OrderedRoute {
  readonly kind: "routes" | "compositeRoutes";
  readonly name: string;
  /** Its position in the config's list of its kind. */
  readonly index: number;
  readonly gateway: string;
  readonly listener?: string;
  readonly match: RouteMatch;
  readonly template: boolean;
  readonly priority: number;
}

/** Every route and composite route, in the order the translator gives them (routes, then composites). */
export function orderedRoutes(config: Config): OrderedRoute[] {
  const routes = config.routes.map((r: Route, index): OrderedRoute => ({
    kind: "routes",
    name: r.name,
    index,
    gateway: r.gateway,
    listener: r.listener,
    match: r.match,
    template: false,
    priority: r.priority ?? 0,
  }));
  const composites = config.compositeRoutes.map((c, index): OrderedRoute => ({
    kind: "compositeRoutes",
    name: c.name,
    index,
    gateway: c.gateway,
    listener: c.listener,
    ...compositeMatch(c),
    priority: 0,
  }));
  return [...routes, ...composites];
}

/** The order of one host's routes: the host's own first, then those for every host (as Envoy's virtual hosts). */
export function rankOf(r: OrderedRoute): number[] {
  return [r.match.host === undefined ? 1 : 0, ...matchRank(r.match, r.priority, r.template)];
}

const SPECIAL = new Set([..."\\.[](){}*+?|^$"]);
const QUANTIFIERS = new Set([..."*?{"]);

/**
 * The literal text every path a regex matches starts with (`/orders/` for `^/orders/[0-9]+$`), or
 * the whole of it when it is nothing but literal text (`exact`). Envoy matches the whole path, so
 * anchors change nothing. A top-level alternation has no common start: "".
 */
export function regexLiteral(pattern: string): { prefix: string; exact: boolean } {
  let depth = 0;
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "\\") i++;
    else if (inClass) inClass = c !== "]";
    else if (c === "[") inClass = true;
    else if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "|" && depth === 0) return { prefix: "", exact: false };
  }
  const body = pattern.replace(/^\^/, "").replace(/(?<!\\)\$$/, "");
  let prefix = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c === "\\" && i + 1 < body.length && !/[A-Za-z0-9]/.test(body[i + 1]!)) {
      if (QUANTIFIERS.has(body[i + 2] ?? "")) return { prefix, exact: false };
      prefix += body[++i];
      continue;
    }
    if (SPECIAL.has(c)) {
      // A quantified last character may be absent or repeated: it is not part of every match.
      return { prefix: QUANTIFIERS.has(c) ? prefix.slice(0, -1) : prefix, exact: false };
    }
    if (QUANTIFIERS.has(body[i + 1] ?? "")) return { prefix, exact: false };
    prefix += c;
  }
  return { prefix, exact: true };
}

function fullMatch(pattern: string, path: string): boolean {
  try {
    return RE2JS.compile(pattern).matches(path);
  } catch {
    return false; // validation reports a bad regex
  }
}

/** Whether every path `b` matches is also matched by `a`. */
function coversPaths(a: RouteMatch, b: RouteMatch): boolean {
  const bRegex = b.pathRegex === undefined ? undefined : regexLiteral(b.pathRegex);
  if (a.path !== undefined) {
    if (b.path !== undefined) return a.path === b.path;
    return !!bRegex?.exact && bRegex.prefix === a.path;
  }
  if (a.pathPrefix !== undefined) {
    const p = a.pathPrefix;
    if (b.path !== undefined) return b.path.startsWith(p);
    if (b.pathPrefix !== undefined) return b.pathPrefix.startsWith(p);
    return bRegex!.prefix.startsWith(p);
  }
  if (b.pathRegex !== undefined) return a.pathRegex === b.pathRegex;
  if (b.path !== undefined) return fullMatch(a.pathRegex!, b.path);
  return false;
}

type Matcher = NonNullable<RouteMatch["headers"]>[number];

const sameMatcher = (x: Matcher, y: Matcher) => JSON.stringify(x) === JSON.stringify(y);

/** Whether `a` asks nothing of a request that `b` does not ask too. */
function coversConditions(a: RouteMatch, b: RouteMatch): boolean {
  if (a.methods && !(b.methods && b.methods.every((m) => a.methods!.includes(m)))) return false;
  const within = (mine: Matcher[] = [], theirs: Matcher[] = []) =>
    mine.every((m) => theirs.some((t) => sameMatcher(m, t)));
  return within(a.headers, b.headers) && within(a.query, b.query);
}

/** Whether no request can satisfy both: different methods, or one header or parameter with two exact values. */
function disjoint(a: RouteMatch, b: RouteMatch): boolean {
  if (a.methods && b.methods && !a.methods.some((m) => b.methods!.includes(m))) return true;
  const clash = (xs: Matcher[] = [], ys: Matcher[] = []) =>
    xs.some((x) =>
      ys.some(
        (y) =>
          x.name === y.name &&
          !x.invert &&
          !y.invert &&
          ((x.exact !== undefined && y.exact !== undefined && x.exact !== y.exact) ||
            (x.present !== undefined && y.present !== undefined && x.present !== y.present)),
      ),
    );
  return clash(a.headers, b.headers) || clash(a.query, b.query);
}

/** A route that an earlier one takes requests from. */
export interface Shadow {
  readonly shadowed: OrderedRoute;
  readonly by: OrderedRoute;
  /** Never reached at all (the write is refused), or only in part (the write is answered with a warning). */
  readonly full: boolean;
  /** A sentence naming both routes. */
  readonly reason: string;
}

const label = (r: OrderedRoute) => `${r.kind === "routes" ? "route" : "composite route"} '${r.name}'`;

function describeMatch(m: RouteMatch): string {
  return m.path !== undefined
    ? `path ${m.path}`
    : m.pathPrefix !== undefined
      ? `pathPrefix ${m.pathPrefix}`
      : `pathRegex ${m.pathRegex}`;
}

/** Where `a` applies but `b` does not, when `a` serves less than `b` (a listener, a host); undefined when `a` serves all of it. */
function narrowerScope(a: OrderedRoute, b: OrderedRoute): string | undefined {
  const parts: string[] = [];
  if (a.listener !== undefined && b.listener === undefined) parts.push(`on listener ${a.listener}`);
  if (a.match.host !== undefined && b.match.host === undefined) parts.push(`for host ${a.match.host}`);
  return parts.length ? parts.join(" ") : undefined;
}

/** Whether `a` and `b` ever sit in the same route table, `a` first. */
function before(a: OrderedRoute, b: OrderedRoute): boolean {
  if (a.gateway !== b.gateway) return false;
  if (a.listener !== undefined && b.listener !== undefined && a.listener !== b.listener) return false;
  const ha = a.match.host;
  const hb = b.match.host;
  if (ha !== undefined && hb !== undefined && ha !== hb) return false;
  // A route for every host comes after a host's own ones (rankOf), so it never shadows them.
  const order = compareRanks(rankOf(a), rankOf(b));
  return order < 0 || (order === 0 && position(a) < position(b));
}

const position = (r: OrderedRoute) => (r.kind === "routes" ? r.index : 1e9 + r.index);

/** The candidates that may take requests from `b`: routes whose path match could cover its paths. */
function candidates(b: OrderedRoute, index: PathIndex): OrderedRoute[] {
  const m = b.match;
  const literal =
    m.path ?? m.pathPrefix ?? (m.pathRegex !== undefined ? regexLiteral(m.pathRegex).prefix : "");
  const out = [...(index.exact.get(literal) ?? [])];
  for (let n = 0; n <= literal.length; n++) out.push(...(index.prefix.get(literal.slice(0, n)) ?? []));
  if (m.pathRegex !== undefined) out.push(...(index.regex.get(m.pathRegex) ?? []));
  return out;
}

interface PathIndex {
  exact: Map<string, OrderedRoute[]>;
  prefix: Map<string, OrderedRoute[]>;
  regex: Map<string, OrderedRoute[]>;
}

function pathIndex(routes: readonly OrderedRoute[]): PathIndex {
  const index: PathIndex = { exact: new Map(), prefix: new Map(), regex: new Map() };
  const add = (map: Map<string, OrderedRoute[]>, key: string, r: OrderedRoute) => {
    const list = map.get(key);
    if (list) list.push(r);
    else map.set(key, [r]);
  };
  for (const r of routes) {
    if (r.match.path !== undefined) add(index.exact, r.match.path, r);
    else if (r.match.pathPrefix !== undefined) add(index.prefix, r.match.pathPrefix, r);
    else add(index.regex, r.match.pathRegex!, r);
  }
  return index;
}

/**
 * Every route another one takes requests from: fully (never reached: the config is refused), or
 * in part: only on a listener or host, or for the requests both match when only the order of
 * creation puts one first (a warning; `priority` settles it).
 */
export function shadows(config: Config): Shadow[] {
  const routes = orderedRoutes(config);
  const index = pathIndex(routes);
  const out: Shadow[] = [];
  for (const b of routes) {
    for (const a of candidates(b, index)) {
      if (a === b || !before(a, b) || !coversPaths(a.match, b.match)) continue;
      const scope = narrowerScope(a, b);
      if (coversConditions(a.match, b.match)) {
        out.push({
          shadowed: b,
          by: a,
          full: scope === undefined,
          reason:
            `${label(b)} is never reached${scope ? ` ${scope}` : ""}: ${label(a)} (${describeMatch(a.match)}) ` +
            `matches every request it matches and is tried first`,
        });
        continue;
      }
      const tie =
        compareRanks(rankOf(a), rankOf(b)) === 0 &&
        coversPaths(b.match, a.match) &&
        !disjoint(a.match, b.match);
      if (tie && scope === undefined) {
        out.push({
          shadowed: b,
          by: a,
          full: false,
          reason:
            `requests that match both ${label(a)} and ${label(b)} go to '${a.name}', which was created first; ` +
            `give one of them a higher priority to choose`,
        });
      }
    }
  }
  return out;
}
