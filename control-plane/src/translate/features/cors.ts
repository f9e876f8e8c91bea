/**
 * Cross-origin requests: Envoy's `cors` filter on every listener, acting only on the routes that
 * carry a policy, and the preflights (OPTIONS) those routes must also match to answer them.
 */
import { TYPE_PREFIX } from "@portico/contract";
import type { Route } from "../../model/schema.js";
import type { HttpFeature, HttpFilterName } from "../feature.js";

const CORS = "envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY = "envoy.extensions.filters.http.cors.v3.CorsPolicy";
const CORS_FILTER: HttpFilterName = "envoy.filters.http.cors";

function corsPolicy(c: NonNullable<Route["cors"]>): object {
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

export const cors: HttpFeature = {
  name: "cors",
  listener: () => ({
    httpFilters: [{ name: CORS_FILTER, typed_config: { "@type": TYPE_PREFIX + CORS } }],
    route: (r) =>
      r.cors
        ? {
            perFilterConfig: { [CORS_FILTER]: corsPolicy(r.cors) },
            // A preflight is an OPTIONS request: it must reach the route whose policy answers it.
            alsoMethods: ["OPTIONS"],
            // Preflights carry no application headers; they go on to the route, whose policy answers
            // them (Envoy's CORS filter does not act on direct responses).
            guardBypass: [{ name: ":method", string_match: { exact: "OPTIONS" }, invert_match: true }],
          }
        : undefined,
  }),
};
