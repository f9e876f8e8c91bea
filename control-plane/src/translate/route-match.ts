/** A route's match as Envoy's `RouteMatch`: its path, methods, headers and query parameters. */
import type { Route } from "../model/schema.js";

function stringMatch(m: { exact?: string; prefix?: string; regex?: string }): object {
  if (m.exact !== undefined) return { exact: m.exact };
  if (m.prefix !== undefined) return { prefix: m.prefix };
  return { safe_regex: { regex: m.regex } };
}

type Matcher = NonNullable<Route["match"]["headers"]>[number];

function headerMatcher(h: Matcher): object {
  return {
    name: h.name,
    ...(h.present !== undefined ? { present_match: h.present } : { string_match: stringMatch(h) }),
    ...(h.invert ? { invert_match: true } : {}),
  };
}

function queryMatcher(q: Matcher): object {
  return {
    name: q.name,
    ...(q.present !== undefined ? { present_match: q.present } : { string_match: stringMatch(q) }),
  };
}

/**
 * The match, with the methods features add to a route that names some (`alsoMethods`), and header
 * matchers of the caller's after the route's own.
 */
export function routeMatch(
  m: Route["match"],
  alsoMethods: readonly string[] = [],
  extraHeaders: readonly object[] = [],
): object {
  const path =
    m.path !== undefined
      ? { path: m.path }
      : m.pathPrefix !== undefined
        ? { prefix: m.pathPrefix }
        : { safe_regex: { regex: m.pathRegex } };
  const added = m.methods ? alsoMethods.filter((x) => !m.methods!.includes(x as never)) : [];
  const methods = added.length ? [...m.methods!, ...added] : m.methods;
  const headers = [
    ...(methods
      ? [{ name: ":method", string_match: { safe_regex: { regex: `^(${methods.join("|")})$` } } }]
      : []),
    ...(m.headers ?? []).map(headerMatcher),
    ...extraHeaders,
  ];
  return {
    ...path,
    ...(headers.length ? { headers } : {}),
    ...(m.query?.length ? { query_parameters: m.query.map(queryMatcher) } : {}),
  };
}
