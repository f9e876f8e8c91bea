import {
  AUTH_TYPE_URLS,
  AuthTypeUrl,
  type ApiKeyMessage,
  type AuthPolicyMessage,
  type ConsumerMessage,
  type CredentialSourceMessage,
  type JwtProviderMessage,
  type OAuthProviderMessage,
  type CredentialSource,
} from "@portico/contract";
import type { ApiKey, AuthPolicy, Config, Consumer, JwtProvider, OauthProvider } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { registerResourceType } from "../xds/types.js";

// Full state: a SotW response lists every resource of the type, so a missing one is a deleted one
// (a revoked key must not linger in ext-authz because nobody asked for it by name).
for (const typeUrl of AUTH_TYPE_URLS) registerResourceType(typeUrl, { fullState: true, readBy: "ext-authz" });

function source(s: CredentialSource): CredentialSourceMessage {
  if ("header" in s) return { header: { name: s.header, prefix: s.prefix } };
  if ("query" in s) return { query: s.query };
  return { cookie: s.cookie };
}

export function jwtProviderMessage(p: JwtProvider): JwtProviderMessage {
  return {
    name: p.name,
    issuer: p.issuer,
    audiences: p.audiences,
    jwks_uri: p.jwksUri,
    jwks_json: p.jwks && JSON.stringify(p.jwks),
    algorithms: p.algorithms,
    clock_skew_seconds: p.clockSkewSeconds,
    max_token_age_seconds: p.maxTokenAgeSeconds,
    require_exp: p.requireExp,
    required_claims: p.requiredClaims,
    typ: p.typ,
    from: p.from.map(source),
    consumer_claim: p.consumerClaim,
    plan_claim: p.planClaim,
    scopes_claim: p.scopesClaim,
    jwks_cache_seconds: p.jwksCacheSeconds,
    jwks_refetch_cooldown_seconds: p.jwksRefetchCooldownSeconds,
    jwks_timeout_ms: p.jwksTimeoutMs,
    max_token_bytes: p.maxTokenBytes,
    allow_any_audience: p.allowAnyAudience,
    allow_insecure_loopback: p.allowInsecureLoopback,
    consumers: p.consumers,
  };
}

/** Only the secret's environment variable travels; the model refuses an inline secret. */
export function oauthProviderMessage(p: OauthProvider): OAuthProviderMessage {
  return {
    name: p.name,
    introspection_url: p.introspectionUrl,
    client_id: p.clientId,
    client_secret_env: p.clientSecretEnv,
    from: p.from.map(source),
    timeout_ms: p.timeoutMs,
    cache_max_seconds: p.cacheMaxSeconds,
    negative_cache_seconds: p.negativeCacheSeconds,
    cache_size: p.cacheSize,
    failure_mode: p.failureMode === "open" ? "OPEN" : "CLOSED",
    audiences: p.audiences,
    issuer: p.issuer,
    consumer_field: p.consumerField,
    plan_field: p.planField,
    max_token_bytes: p.maxTokenBytes,
    allow_insecure_loopback: p.allowInsecureLoopback,
    consumers: p.consumers,
  };
}

export function consumerMessage(c: Consumer): ConsumerMessage {
  return { name: c.name, plan: c.plan, scopes: c.scopes, metadata: c.metadata, disabled: c.disabled };
}

export function apiKeyMessage(k: ApiKey): ApiKeyMessage {
  return {
    name: k.name,
    consumer: k.consumer,
    sha256: k.sha256,
    prefix: k.prefix,
    expires_at: k.expiresAt,
    revoked: k.revoked,
    scopes: k.scopes,
  };
}

export function authPolicyMessage(p: AuthPolicy): AuthPolicyMessage {
  return {
    name: p.name,
    allow_anonymous: p.allowAnonymous,
    accept: p.accept,
    required_scopes: p.requiredScopes,
    scopes_mode: p.scopesMode === "any" ? "ANY" : "ALL",
    consumers: p.consumers && { values: p.consumers },
    required_claims:
      p.requiredClaims &&
      Object.fromEntries(Object.entries(p.requiredClaims).map(([claim, values]) => [claim, { values }])),
    strip_credentials: p.stripCredentials,
  };
}

/**
 * Providers, consumers, API keys and auth policies as ext-authz's resource types: one resource
 * per item, named by the item, so that a change to one item is one resource over delta xDS.
 */
export function authPolicyResources(config: Config): ResourceInput[] {
  const of = <T extends { name: string }>(typeUrl: string, items: readonly T[], message: (t: T) => object) =>
    items.map((item) => ({ typeUrl, name: item.name, message: message(item) }));
  return [
    ...of(AuthTypeUrl.JwtProvider, config.jwtProviders, jwtProviderMessage),
    ...of(AuthTypeUrl.OAuthProvider, config.oauthProviders, oauthProviderMessage),
    ...of(AuthTypeUrl.Consumer, config.consumers, consumerMessage),
    ...of(AuthTypeUrl.ApiKey, config.apiKeys, apiKeyMessage),
    ...of(AuthTypeUrl.AuthPolicy, config.authPolicies, authPolicyMessage),
  ];
}
