import {
  decodeMessage,
  type PackedAny,
  AUTH_PACKAGE,
  AuthTypeUrl,
  type ApiKeyMessage,
  type AuthMessage,
  type AuthPolicyMessage,
  type ConsumerMessage,
  type CredentialSourceMessage,
  type JwtProviderMessage,
  type OAuthProviderMessage,
  type PolicyInput,
} from "@portico/contract";

/** The parts of the policy document that arrive over xDS, one list per resource type. */
export type PolicyPart = "jwtProviders" | "oauthProviders" | "consumers" | "apiKeys" | "authPolicies";

/** One document item as decoded, before the policy schema checks it. */
export type PolicyItem = { name: string } & Record<string, unknown>;

const list = <T>(v: T[] | undefined): T[] | undefined => (v && v.length > 0 ? v : undefined);
const record = <T>(v: Record<string, T> | undefined): Record<string, T> | undefined =>
  v && Object.keys(v).length > 0 ? v : undefined;

/** Drops absent fields, so the item reads like one written in a policy file. */
function compact(item: Record<string, unknown>): PolicyItem {
  return Object.fromEntries(Object.entries(item).filter(([, v]) => v !== undefined)) as PolicyItem;
}

/** An empty message is passed on as `{}`, for the policy schema to refuse with its field. */
function source(m: CredentialSourceMessage): Record<string, unknown> {
  if ("header" in m && m.header) return compact({ header: m.header.name, prefix: m.header.prefix });
  if ("query" in m && m.query !== undefined) return { query: m.query };
  if ("cookie" in m && m.cookie !== undefined) return { cookie: m.cookie };
  return {};
}

function jwtProvider(m: JwtProviderMessage): PolicyItem {
  let jwks: unknown;
  if (m.jwks_json !== undefined) {
    try {
      jwks = JSON.parse(m.jwks_json);
    } catch {
      throw new Error(`JWT provider ${m.name}: jwks_json is not JSON`);
    }
  }
  return compact({
    name: m.name,
    issuer: m.issuer,
    audiences: list(m.audiences),
    jwksUri: m.jwks_uri,
    jwks,
    algorithms: m.algorithms ?? [],
    clockSkewSeconds: m.clock_skew_seconds,
    maxTokenAgeSeconds: m.max_token_age_seconds,
    requireExp: m.require_exp,
    requiredClaims: m.required_claims ?? [],
    typ: m.typ,
    from: list(m.from)?.map(source),
    consumerClaim: m.consumer_claim,
    planClaim: m.plan_claim,
    scopesClaim: m.scopes_claim,
    jwksCacheSeconds: m.jwks_cache_seconds,
    jwksRefetchCooldownSeconds: m.jwks_refetch_cooldown_seconds,
    jwksTimeoutMs: m.jwks_timeout_ms,
    maxTokenBytes: m.max_token_bytes,
    allowAnyAudience: m.allow_any_audience || undefined,
    allowInsecureLoopback: m.allow_insecure_loopback || undefined,
    consumers: list(m.consumers),
  });
}

function oauthProvider(m: OAuthProviderMessage): PolicyItem {
  return compact({
    name: m.name,
    introspectionUrl: m.introspection_url,
    clientId: m.client_id,
    clientSecretEnv: m.client_secret_env || undefined,
    from: list(m.from)?.map(source),
    timeoutMs: m.timeout_ms,
    cacheMaxSeconds: m.cache_max_seconds,
    negativeCacheSeconds: m.negative_cache_seconds,
    cacheSize: m.cache_size,
    failureMode: m.failure_mode === "OPEN" ? "open" : "closed",
    audiences: list(m.audiences),
    issuer: m.issuer,
    consumerField: m.consumer_field,
    planField: m.plan_field,
    maxTokenBytes: m.max_token_bytes,
    allowInsecureLoopback: m.allow_insecure_loopback || undefined,
    consumers: list(m.consumers),
  });
}

function consumer(m: ConsumerMessage): PolicyItem {
  return compact({
    name: m.name,
    plan: m.plan,
    scopes: list(m.scopes),
    metadata: record(m.metadata),
    disabled: m.disabled ?? false,
  });
}

function apiKey(m: ApiKeyMessage): PolicyItem {
  return compact({
    name: m.name,
    consumer: m.consumer,
    sha256: m.sha256,
    prefix: m.prefix,
    expiresAt: m.expires_at,
    revoked: m.revoked ?? false,
    scopes: list(m.scopes),
  });
}

function authPolicy(m: AuthPolicyMessage): PolicyItem {
  const claims = record(m.required_claims);
  return compact({
    name: m.name,
    allowAnonymous: m.allow_anonymous ?? false,
    accept: list(m.accept),
    requiredScopes: list(m.required_scopes),
    scopesMode: m.scopes_mode === "ANY" ? "any" : "all",
    consumers: m.consumers && (m.consumers.values ?? []),
    requiredClaims: claims && Object.fromEntries(Object.entries(claims).map(([k, v]) => [k, v.values ?? []])),
    stripCredentials: m.strip_credentials,
  });
}

interface Kind {
  message: AuthMessage;
  part: PolicyPart;
  /** How a person calls one, in NACK messages. */
  what: string;
  decode: (m: never) => PolicyItem;
}

const KINDS: readonly Kind[] = [
  { message: "JwtProvider", part: "jwtProviders", what: "JWT provider", decode: jwtProvider },
  { message: "OAuthProvider", part: "oauthProviders", what: "OAuth provider", decode: oauthProvider },
  { message: "Consumer", part: "consumers", what: "consumer", decode: consumer },
  { message: "ApiKey", part: "apiKeys", what: "API key", decode: apiKey },
  { message: "AuthPolicy", part: "authPolicies", what: "auth policy", decode: authPolicy },
];

const BY_TYPE_URL = new Map(KINDS.map((k) => [AuthTypeUrl[k.message], k]));

/** The document part a type URL fills, or undefined for a type that is not an auth resource. */
export function partOf(typeUrl: string): PolicyPart | undefined {
  return BY_TYPE_URL.get(typeUrl)?.part;
}

/**
 * Decodes one resource into a document item. Throws (the update is refused) when the payload is
 * of another type, does not decode, or is named differently from its resource.
 */
export function decodeResource(typeUrl: string, name: string, any: PackedAny): PolicyItem {
  const kind = BY_TYPE_URL.get(typeUrl);
  if (!kind) throw new Error(`${typeUrl} is not an auth resource type`);
  if (any.type_url !== typeUrl)
    throw new Error(`resource ${name}: a ${any.type_url} in a ${typeUrl} response`);
  let message: { name: string };
  try {
    message = decodeMessage<{ name: string }>(`${AUTH_PACKAGE}.${kind.message}`, any.value);
  } catch (err) {
    throw new Error(`${kind.what} ${name}: cannot be decoded (${(err as Error).message})`);
  }
  if (message.name !== name) throw new Error(`${kind.what} ${name}: the message is named ${message.name}`);
  return kind.decode(message as never);
}

export type PolicyParts = Readonly<Record<PolicyPart, ReadonlyMap<string, PolicyItem>>>;

/**
 * The policy document of the received resources. Resources have no order, so each list is
 * sorted by name: the same resources always make the same document (and revision).
 */
export function assembleDocument(parts: PolicyParts): PolicyInput {
  const sorted = (m: ReadonlyMap<string, PolicyItem>) =>
    [...m.keys()].sort().map((name) => m.get(name)!) as never[];
  return {
    jwtProviders: sorted(parts.jwtProviders),
    oauthProviders: sorted(parts.oauthProviders),
    consumers: sorted(parts.consumers),
    apiKeys: sorted(parts.apiKeys),
    authPolicies: sorted(parts.authPolicies),
  };
}

/** `apiKeys[3].consumer` → `API key 'k-3' consumer`: a NACK names the resource, not a list position. */
export function resourceField(doc: PolicyInput, field: string): string {
  const m = /^(\w+)\[(\d+)\]\.?(.*)$/.exec(field);
  const kind = m && KINDS.find((k) => k.part === m[1]);
  const item = kind && (doc[kind.part] as { name?: string }[] | undefined)?.[Number(m![2])];
  if (!kind || !item?.name) return field;
  return `${kind.what} '${item.name}'${m![3] ? ` ${m![3]}` : ""}`;
}
