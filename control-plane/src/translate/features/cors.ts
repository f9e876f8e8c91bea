/**
 * Cross-origin requests: Envoy's `cors` filter on every listener, acting only on the routes that
 * carry a policy, and the preflights (OPTIONS) those routes must also match to answer them. Envoy
 * answers a preflight from an allowed origin; one from any other origin is refused by a guard
 * (403, no CORS headers) rather than passed on to the upstream.
 */
import { TYPE_PREFIX } from "@portico/contract";
import type { Route } from "../../model/schema.js";
import type { HttpFeature, HttpFilterName, RouteGuard } from "../feature.js";

const CORS = "envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
const CORS_FILTER: HttpFilterName = "envoy.filters.http.cors";

type Cors = NonNullable<Route["cors"]>;

function corsPolicy(c: Cors): object {
  return {
    "@type": TYPE_PREFIX + CORS_POLICY,
    allow_origin_string_match: c.allowOrigins.map((o) =>
      o === "*"
        ? { safe_regex: { regex: ".*" } }
        : o.startsWith("~")
          ? { safe_regex: { regex: o.slice(1) } }
          : { exact: o },
    ),
    ...(c.allowMethods ? { allow_methods: c.allowMethods.join(",") } : {}),
    ...(c.allowHeaders ? { allow_headers: c.allowHeaders.join(",") } : {}),
    ...(c.exposeHeaders ? { expose_headers: c.exposeHeaders.join(",") } : {}),
    ...(c.maxAgeSeconds !== undefined ? { max_age: String(c.maxAgeSeconds) } : {}),
    ...(c.allowCredentials !== undefined ? { allow_credentials: { value: c.allowCredentials } } : {}),
  };
}

/** RE2 text matching exactly `s`. */
const literal = (s: string) => s.replace(/[\\^$.|?*+()[\]{}]/g, "\\$&");

/** A preflight (OPTIONS with Access-Control-Request-Method) whose Origin the policy does not allow. */
function refusedPreflight(c: Cors): RouteGuard | undefined {
  if (c.allowOrigins.includes("*")) return undefined;
  const allowed = c.allowOrigins.map((o) => (o.startsWith("~") ? `(?:${o.slice(1)})` : literal(o))).join("|");
  return {
    name: "cors-origin-refused",
    headers: [
      { name: ":method", string_match: { exact: "OPTIONS" } },
      { name: "access-control-request-method", present_match: true },
      { name: "origin", present_match: true },
      { name: "origin", string_match: { safe_regex: { regex: allowed } }, invert_match: true },
    ],
    status: 403,
    body: { code: "cors_origin_refused", message: "this origin may not call this route" },
  };
}

export const cors: HttpFeature = {
  name: "cors",
  listener: () => ({
    httpFilters: [{ name: CORS_FILTER, typed_config: { "@type": TYPE_PREFIX + CORS } }],
    route: (r) => {
      if (!r.cors) return undefined;
      const refused = refusedPreflight(r.cors);
      return {
        perFilterConfig: { [CORS_FILTER]: corsPolicy(r.cors) },
        // A preflight is an OPTIONS request: it must reach the route whose policy answers it.
        alsoMethods: ["OPTIONS"],
        // Preflights carry no application headers; they go on to the route, whose policy answers
        // them (Envoy's CORS filter does not act on direct responses).
        guardBypass: [{ name: ":method", string_match: { exact: "OPTIONS" }, invert_match: true }],
        ...(refused ? { guards: [refused] } : {}),
      };
    },
  }),
};
