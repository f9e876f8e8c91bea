/**
 * Which part of the gateway decides who may call a route: Envoy alone (`native`: jwt_authn with
 * the keys the control plane holds, then Portico's checks in a Lua filter) or a call to ext-authz.
 * One decision per route, the same for the translator, the write-time check and the status.
 */
import type { Jwk } from "@portico/contract";
import type { FetchedKeys } from "./jwks.js";
import type { AuthPolicy, Config, Gateway, JwtProvider } from "./schema.js";

/** A provider Envoy verifies, with the keys it verifies with (inline, or fetched by the control plane). */
export interface NativeProvider {
  readonly provider: JwtProvider;
  readonly keys: readonly Jwk[];
}

export type AuthPath =
  /** No auth policy: nobody is asked. */
  | { readonly kind: "public" }
  | { readonly kind: "native"; readonly policy: AuthPolicy; readonly providers: readonly NativeProvider[] }
  | { readonly kind: "ext_authz"; readonly policy: AuthPolicy; readonly reason: string };

/** Envoy 1.40 knows EdDSA, not RFC 9864's newer name for it. */
const NOT_IN_ENVOY = new Set<string>(["Ed25519"]);

/** The JWT providers a policy accepts, in the order ext-authz tries them; a reason when it accepts anything else. */
export function jwtProvidersOf(
  config: Config,
  policy: AuthPolicy,
): { ok: true; providers: JwtProvider[] } | { ok: false; reason: string } {
  const byName = new Map(config.jwtProviders.map((j) => [j.name, j]));
  const oauth = new Set(config.oauthProviders.map((o) => o.name));
  const out: JwtProvider[] = [];
  const seen = new Set<string>();
  const push = (j: JwtProvider) => {
    if (!seen.has(j.name)) out.push(j);
    seen.add(j.name);
  };
  for (const entry of policy.accept) {
    if (entry === "apiKey")
      return { ok: false, reason: "it accepts API keys, which ext-authz checks against their hashes" };
    if (entry === "oauth" || oauth.has(entry))
      return { ok: false, reason: "it accepts OAuth tokens, which ext-authz introspects" };
    // ext-authz expands `jwt` to every provider in name order (its document is sorted by name).
    if (entry === "jwt") for (const name of [...byName.keys()].sort()) push(byName.get(name)!);
    else {
      const j = byName.get(entry);
      if (!j) return { ok: false, reason: `it names ${entry}, which is no provider` };
      push(j);
    }
  }
  if (out.length === 0) return { ok: false, reason: "it accepts no JWT provider" };
  return { ok: true, providers: out };
}

/**
 * Why Envoy cannot verify a provider's tokens exactly as ext-authz does, whatever its keys; undefined
 * when it can.
 */
export function providerProblem(config: Config, j: JwtProvider): string | undefined {
  const unknown = j.algorithms.filter((a) => NOT_IN_ENVOY.has(a));
  if (unknown.length)
    return `provider ${j.name} allows ${unknown.join(", ")}, an algorithm name Envoy does not know`;
  // The checks after jwt_authn compare these byte for byte where ext-authz compares JavaScript strings.
  const unusual = (v: string | undefined) => v !== undefined && /[^ -~]/.test(v);
  if (unusual(j.typ)) return `provider ${j.name} pins a typ with characters beyond printable ASCII`;
  const source = j.from.find((f) =>
    "header" in f ? unusual(f.prefix) : "query" in f ? unusual(f.query) : false,
  );
  if (source) return `provider ${j.name} reads a credential named with characters beyond printable ASCII`;
  const twin = config.jwtProviders.find((o) => o.name !== j.name && o.issuer === j.issuer);
  if (twin)
    return `providers ${j.name} and ${twin.name} share the issuer ${j.issuer}, and Envoy tells providers apart by issuer`;
  return undefined;
}

/** Why a JWT-only policy cannot be verified by Envoy whatever keys are held; undefined when it can. */
export function staticNativeProblem(config: Config, policy: AuthPolicy): string | undefined {
  const resolved = jwtProvidersOf(config, policy);
  if (!resolved.ok) return resolved.reason;
  for (const j of resolved.providers) {
    const problem = providerProblem(config, j);
    if (problem) return problem;
  }
  return undefined;
}

/** Whether a policy accepts JWTs only (the routes `extAuthz.jwt: jwt_authn` promises to verify in Envoy). */
export function acceptsJwtOnly(config: Config, policy: AuthPolicy): boolean {
  const oauth = new Set(config.oauthProviders.map((o) => o.name));
  return policy.accept.every((a) => a !== "apiKey" && a !== "oauth" && !oauth.has(a));
}

/**
 * The route's path for a gateway and policy. `keys` are the key sets the control plane fetched;
 * a provider whose keys are not held (yet) sends its routes to ext-authz, which fetches them itself.
 */
export function authPathOf(
  config: Config,
  gateway: Gateway,
  policy: AuthPolicy | undefined,
  keys: FetchedKeys | undefined,
): AuthPath {
  if (!policy) return { kind: "public" };
  // The setting lives there, and a route with a policy needs it (validation says so).
  if (!gateway.extAuthz) return { kind: "ext_authz", policy, reason: "the gateway has no extAuthz" };
  const mode = gateway.extAuthz.jwt;
  if (mode === "ext_authz")
    return { kind: "ext_authz", policy, reason: "the gateway sends every route to ext-authz (extAuthz.jwt)" };
  const resolved = jwtProvidersOf(config, policy);
  if (!resolved.ok) return { kind: "ext_authz", policy, reason: resolved.reason };
  const providers: NativeProvider[] = [];
  for (const j of resolved.providers) {
    const problem = providerProblem(config, j);
    if (problem) return { kind: "ext_authz", policy, reason: problem };
    if (j.jwks) {
      providers.push({ provider: j, keys: j.jwks.keys });
      continue;
    }
    const held = keys?.get(j.name);
    if (!held || held.uri !== j.jwksUri)
      return {
        kind: "ext_authz",
        policy,
        reason: `the keys of provider ${j.name} (${j.jwksUri}) are not fetched yet`,
      };
    providers.push({ provider: j, keys: held.keys });
  }
  return { kind: "native", policy, providers };
}

/**
 * Why a route's policy breaks its gateway's promise that Envoy verifies its JWT routes
 * (`extAuthz.jwt: jwt_authn`); undefined when it keeps it, or the gateway promises nothing.
 * Keys not fetched yet are no reason: the route waits for them on ext-authz.
 */
export function nativeModeProblem(
  config: Config,
  gateway: Gateway,
  policyName: string | undefined,
): string | undefined {
  if (gateway.extAuthz?.jwt !== "jwt_authn" || policyName === undefined) return undefined;
  const policy = config.authPolicies.find((p) => p.name === policyName);
  if (!policy || !acceptsJwtOnly(config, policy)) return undefined;
  const problem = staticNativeProblem(config, policy);
  if (!problem) return undefined;
  return `gateway '${gateway.name}' has Envoy verify JWT routes (extAuthz.jwt: jwt_authn), but auth policy '${policy.name}' cannot be: ${problem}; set extAuthz.jwt to auto or ext_authz to let ext-authz verify it`;
}
