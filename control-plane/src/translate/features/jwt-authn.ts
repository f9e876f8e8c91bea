/**
 * Envoy's own `jwt_authn` filter (`extAuthz.jwt: jwt_authn`) is not used: it cannot refuse what
 * ext-authz refuses, so routes of a gateway asking for it are verified by ext-authz like any other.
 * `NATIVE_JWT_UNFIT` says why, for the docs and for whoever asks.
 */
import type { AuthPolicy, Route } from "../../model/schema.js";
import type { GatewayContext } from "../context.js";

/**
 * The checks of every JWT provider that Envoy's jwt_authn (1.40) cannot make, so a token it accepts
 * ext-authz would refuse: an unknown `crit` header (RFC 7515 §4.1.11) and an `iat` in the future
 * are never looked at, and its refusals name the failed check and echo the request URL in
 * `WWW-Authenticate`. Making it as strict would take a check after it over the token's header and
 * payload (`header_in_metadata`, `payload_in_metadata`) answering in ext-authz's shape, which the
 * gateway's local-reply mapping would have to leave as it is.
 */
export const NATIVE_JWT_UNFIT: readonly string[] = [
  "crit: an unknown critical header is not refused",
  "iat: a token issued in the future is not refused",
  "refusals: the reason and the request URL reach the caller",
];

const policiesByConfig = new WeakMap<object, Map<string, AuthPolicy>>();

/** The route's auth policy, looked up in a by-name index built once per config. */
export function authPolicyOf(ctx: GatewayContext, r: Route): AuthPolicy | undefined {
  if (r.authPolicy === undefined) return undefined;
  let byName = policiesByConfig.get(ctx.config);
  if (!byName) {
    byName = new Map(ctx.config.authPolicies.map((p) => [p.name, p]));
    policiesByConfig.set(ctx.config, byName);
  }
  return byName.get(r.authPolicy);
}
