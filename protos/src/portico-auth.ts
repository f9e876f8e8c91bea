import { TYPE_PREFIX } from "./envoy.js";

/** `portico.auth.v1` (protos/portico/auth/v1/auth.proto): the resources ext-authz receives over xDS. */
export const AUTH_PACKAGE = "portico.auth.v1";

/**
 * The message of each resource kind, in dependency order: a type comes after the types its
 * resources refer to (keys name consumers, policies name providers). Pushes follow this order
 * and removals the reverse, so a node never holds a reference to something it does not have.
 */
export const AUTH_MESSAGES = ["JwtProvider", "OAuthProvider", "Consumer", "ApiKey", "AuthPolicy"] as const;
export type AuthMessage = (typeof AUTH_MESSAGES)[number];

export const AuthTypeUrl: Readonly<Record<AuthMessage, string>> = Object.fromEntries(
  AUTH_MESSAGES.map((m) => [m, `${TYPE_PREFIX}${AUTH_PACKAGE}.${m}`]),
) as Record<AuthMessage, string>;

/** The type URLs in dependency order. */
export const AUTH_TYPE_URLS: readonly string[] = AUTH_MESSAGES.map((m) => AuthTypeUrl[m]);

/*
 * The messages as plain objects, with the field names of the .proto (how protobufjs reads and
 * writes them here). Enums are their value names; unset fields are absent.
 */

export type CredentialSourceMessage =
  { header: { name: string; prefix?: string } } | { query: string } | { cookie: string };

export interface StringListMessage {
  values?: string[];
}

export interface JwtProviderMessage {
  name: string;
  issuer: string;
  audiences?: string[];
  jwks_uri?: string;
  jwks_json?: string;
  algorithms?: string[];
  clock_skew_seconds?: number;
  max_token_age_seconds?: number;
  require_exp?: boolean;
  required_claims?: string[];
  typ?: string;
  from?: CredentialSourceMessage[];
  consumer_claim?: string;
  plan_claim?: string;
  scopes_claim?: string;
  jwks_cache_seconds?: number;
  jwks_refetch_cooldown_seconds?: number;
  jwks_timeout_ms?: number;
  max_token_bytes?: number;
  allow_any_audience?: boolean;
  allow_insecure_loopback?: boolean;
  consumers?: string[];
}

export interface OAuthProviderMessage {
  name: string;
  introspection_url: string;
  client_id: string;
  client_secret_env?: string;
  from?: CredentialSourceMessage[];
  timeout_ms?: number;
  cache_max_seconds?: number;
  negative_cache_seconds?: number;
  cache_size?: number;
  failure_mode?: "FAILURE_MODE_UNSPECIFIED" | "CLOSED" | "OPEN";
  audiences?: string[];
  issuer?: string;
  consumer_field?: string;
  plan_field?: string;
  max_token_bytes?: number;
  allow_insecure_loopback?: boolean;
  consumers?: string[];
}

export interface ConsumerMessage {
  name: string;
  plan?: string;
  scopes?: string[];
  metadata?: Record<string, string>;
  disabled?: boolean;
}

export interface ApiKeyMessage {
  name: string;
  consumer: string;
  sha256: string;
  prefix?: string;
  expires_at?: string;
  revoked?: boolean;
  scopes?: string[];
}

export interface AuthPolicyMessage {
  name: string;
  allow_anonymous?: boolean;
  accept?: string[];
  required_scopes?: string[];
  scopes_mode?: "SCOPES_MODE_UNSPECIFIED" | "ALL" | "ANY";
  consumers?: StringListMessage;
  required_claims?: Record<string, StringListMessage>;
  strip_credentials?: boolean;
}
