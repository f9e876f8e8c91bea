/**
 * Route entries that answer before a request reaches a route: 400 when a required header is absent,
 * 405 with Allow for a path served only for some methods, and the features' own guards (RouteGuard).
 * All are JSON, like Portico's errors.
 */
import type { Route } from "../model/schema.js";
import type { RouteGuard, RoutePatch } from "./feature.js";
import { routeMatch } from "./route-match.js";

const overwrite = (key: string, value: string) => ({
  header: { key, value },
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
});

/** A direct JSON answer, with extra response headers after its content-type. */
function jsonAnswer(status: number, body: object, headers: object[] = []): object {
  return {
    direct_response: { status, body: { inline_string: JSON.stringify(body) } },
    response_headers_to_add: [overwrite("content-type", "application/json"), ...headers],
  };
}

/** A guard as a route entry: the route's match narrowed by the guard's headers; placed just before its route. */
function guardEntry(r: Route, patch: RoutePatch, g: RouteGuard): object {
  return {
    name: `${r.name}/${g.name}`,
    match: routeMatch(r.match, patch.alsoMethods, g.headers),
    ...jsonAnswer(g.status, g.body),
  };
}

/** 400 naming the header when a required one is absent. */
function requiredHeaderGuard(h: string, bypass: readonly object[]): RouteGuard {
  return {
    name: `missing-${h}`,
    headers: [{ name: h, present_match: true, invert_match: true }, ...bypass],
    status: 400,
    body: { code: "missing_header", message: `the ${h} header is required`, header: h },
  };
}

/** The entries placed before a route: its features' guards, then its required-header checks. */
export function guardsBefore(r: Route, patch: RoutePatch): object[] {
  const required = (r.requiredHeaders ?? []).map((h) => requiredHeaderGuard(h, patch.guardBypass ?? []));
  return [...(patch.guards ?? []), ...required].map((g) => guardEntry(r, patch, g));
}

/** Answers 405 with Allow for a path served only for some methods; placed after that path's last route. */
export function methodGuard(r: Route, methods: string[]): object {
  const { methods: _omit, ...match } = r.match;
  return {
    name: `${r.name}/method-not-allowed`,
    match: routeMatch(match),
    ...jsonAnswer(405, { code: "method_not_allowed", message: `use ${methods.join(", ")}`, allow: methods }, [
      overwrite("allow", methods.join(", ")),
    ]),
  };
}
