import { z } from "zod";
import { Name } from "./name.js";
import { isLoopbackHost } from "../loopback.js";

/**
 * Authentication policy, one schema per kind: JWT and OAuth providers, consumers, API keys and
 * auth policies. The control plane validates writes with these; ext-authz checks what it receives
 * over xDS (or reads from a static file) with the same ones, so the two cannot disagree.
 */

/** RFC 7230 token characters; Envoy refuses anything else in a header name. */
const HeaderName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "not a valid HTTP header name")
  .transform((s) => s.toLowerCase());

/** Credential kinds an auth policy may name instead of a provider (the control plane's `accept`). */
export const CREDENTIAL_KINDS = ["jwt", "apiKey", "oauth"] as const;

export const JWS_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
  "HS256",
  "HS384",
  "HS512",
] as const;
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];

/**
 * Where a credential is read from: a header (with an optional scheme prefix such as `Bearer `,
 * matched without regard to case), a query parameter, or a cookie.
 */
export const CredentialSourceSchema = z.union([
  z
    .object({
      header: HeaderName,
      prefix: z.string().max(32).optional(),
    })
    .strict(),
  z.object({ query: z.string().min(1).max(128) }).strict(),
  z.object({ cookie: z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "not a valid cookie name") }).strict(),
]);
export type CredentialSource = z.infer<typeof CredentialSourceSchema>;

const BEARER: CredentialSource[] = [{ header: "authorization", prefix: "Bearer " }];

/**
 * Consumer names no credential may claim: they are what rate-limit keys and identity headers say
 * of a caller without credentials, so a token naming one would escape per-consumer limits.
 */
export const RESERVED_CONSUMERS: ReadonlySet<string> = new Set(["anonymous", "unknown", "default"]);

/** Whether a consumer name a token (or introspection answer) carries is one no credential may claim. */
export function isReservedConsumer(name: string): boolean {
  return RESERVED_CONSUMERS.has(name.trim().toLowerCase());
}

/** Environment variables ext-authz may read secrets from; any other name (`AWS_SECRET_ACCESS_KEY`) is refused. */
export const SECRET_ENV_PREFIX = "PORTICO_SECRET_";

/**
 * Why a URL keys or verdicts are fetched from cannot be trusted, or undefined when it can: only
 * `https://`, so nobody on the path can swap the signing keys or forge an answer. Plain `http://`
 * is allowed to loopback only, and only when the provider says so (`allowInsecureLoopback`).
 */
export function insecureUrlProblem(url: string, allowInsecureLoopback: boolean): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return "not a URL";
  }
  if (u.username || u.password) return "must not carry credentials";
  if (u.protocol === "https:") return undefined;
  if (u.protocol !== "http:") return "must be https://";
  if (!isLoopbackHost(u.hostname)) return "must be https:// (plain http:// is allowed to loopback only)";
  if (!allowInsecureLoopback) return "plain http:// to loopback needs allowInsecureLoopback: true";
  return undefined;
}

/** A public JWK (RFC 7517). Private members are refused, except `k` of a symmetric key. */
export const JwkSchema = z
  .object({
    kty: z.enum(["RSA", "EC", "OKP", "oct"]),
    kid: z.string().min(1).max(256).optional(),
    alg: z.string().optional(),
    use: z.string().optional(),
    key_ops: z.array(z.string()).optional(),
    crv: z.string().optional(),
    n: z.string().optional(),
    e: z.string().optional(),
    x: z.string().optional(),
    y: z.string().optional(),
    k: z.string().optional(),
    d: z.string().optional(),
    p: z.string().optional(),
    q: z.string().optional(),
    dp: z.string().optional(),
    dq: z.string().optional(),
    qi: z.string().optional(),
    x5c: z.array(z.string()).optional(),
    x5t: z.string().optional(),
    "x5t#S256": z.string().optional(),
    ext: z.boolean().optional(),
  })
  .strict();
export type Jwk = z.infer<typeof JwkSchema>;

export const JwtProviderSchema = z
  .object({
    name: Name,
    /** The exact `iss` the tokens carry; also how a token is matched to its provider. */
    issuer: z.string().min(1),
    /** A token must name at least one of these in `aud`; required unless `allowAnyAudience` waives it. */
    audiences: z.array(z.string().min(1)).min(1).optional(),
    /** Waives `audiences`: a token minted for any other service of the issuer is accepted too. */
    allowAnyAudience: z.boolean().default(false),
    /** Where the signing keys are published (fetched, cached, re-fetched on an unknown `kid`); `https://` only. */
    jwksUri: z.url({ protocol: /^https?$/ }).optional(),
    /** Lets `jwksUri` be plain `http://` to a loopback address (a sidecar issuer, a test). */
    allowInsecureLoopback: z.boolean().default(false),
    /** Or the keys themselves. HMAC secrets may only be given here. */
    jwks: z
      .object({ keys: z.array(JwkSchema).min(1) })
      .strict()
      .optional(),
    /** Pinned per provider (RFC 8725 §3.1): a token naming any other `alg` is refused before its key is looked up. */
    algorithms: z.array(z.enum(JWS_ALGORITHMS)).min(1),
    clockSkewSeconds: z.number().int().min(0).max(300).default(60),
    /** Refuse tokens whose `iat` is older than this, whatever their `exp`. */
    maxTokenAgeSeconds: z.number().int().min(1).optional(),
    requireExp: z.boolean().default(true),
    /** Claims that must be present. */
    requiredClaims: z.array(z.string().min(1)).default([]),
    /** The `typ` header a token must carry (e.g. `at+jwt`), when set. */
    typ: z.string().min(1).optional(),
    from: z.array(CredentialSourceSchema).min(1).default(BEARER),
    /** The claim naming the consumer; a token without it is refused. */
    consumerClaim: z.string().min(1).default("sub"),
    /**
     * The consumer records this provider's tokens may name: a token whose consumer claim equals one
     * of them is that consumer (its plan, its allow-lists, its limits). A token naming any other
     * consumer record is refused, so a subject can never pass itself off as an API-key consumer.
     */
    consumers: z.array(Name).optional(),
    /** The claim naming the plan, used when the consumer has no record of its own. */
    planClaim: z.string().min(1).optional(),
    /** The claim holding scopes; by default `scope` (space-separated) and `scp` (list or string). */
    scopesClaim: z.string().min(1).optional(),
    /** Keys are re-fetched in the background after this long (Envoy's jwt_authn also uses 10 minutes). */
    jwksCacheSeconds: z.number().int().min(1).default(600),
    /** At most one fetch per this many seconds on unknown `kid`s, so a flood of made-up kids cannot flood the issuer. */
    jwksRefetchCooldownSeconds: z.number().int().min(0).default(30),
    jwksTimeoutMs: z.number().int().min(10).max(60_000).default(2_000),
    /** Longer tokens are refused before any decoding. */
    maxTokenBytes: z.number().int().min(256).max(65_536).default(8_192),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.jwksUri === undefined) === (p.jwks === undefined)) {
      ctx.addIssue({ code: "custom", message: "give exactly one of jwksUri or jwks", path: [] });
    }
    if (p.audiences === undefined && !p.allowAnyAudience) {
      ctx.addIssue({
        code: "custom",
        path: ["audiences"],
        message: "list the audiences a token must name, or set allowAnyAudience: true to accept any",
      });
    }
    if (p.audiences !== undefined && p.allowAnyAudience) {
      ctx.addIssue({
        code: "custom",
        path: ["allowAnyAudience"],
        message: "give audiences or allowAnyAudience, not both",
      });
    }
    const jwksProblem =
      p.jwksUri === undefined ? undefined : insecureUrlProblem(p.jwksUri, p.allowInsecureLoopback);
    if (jwksProblem) ctx.addIssue({ code: "custom", path: ["jwksUri"], message: jwksProblem });
    if (p.jwksUri !== undefined && p.algorithms.some((a) => a.startsWith("HS"))) {
      ctx.addIssue({
        code: "custom",
        path: ["algorithms"],
        message:
          "HMAC algorithms need the secret inline in jwks; a published JWKS cannot hold a shared secret",
      });
    }
  });
export type JwtProvider = z.infer<typeof JwtProviderSchema>;

export const OauthProviderSchema = z
  .object({
    name: Name,
    /** The RFC 7662 introspection endpoint; `https://` only. */
    introspectionUrl: z.url({ protocol: /^https?$/ }),
    /** Lets `introspectionUrl` be plain `http://` to a loopback address. */
    allowInsecureLoopback: z.boolean().default(false),
    clientId: z.string().min(1),
    /** The client secret, or the name of the environment variable holding it (preferred). */
    clientSecret: z.string().min(1).optional(),
    /** Only variables named `PORTICO_SECRET_*`: a policy cannot make ext-authz send any other secret of its environment. */
    clientSecretEnv: z
      .string()
      .regex(
        new RegExp(`^${SECRET_ENV_PREFIX}[A-Z0-9_]+$`),
        `an environment variable named ${SECRET_ENV_PREFIX}<NAME> (upper case, digits, _)`,
      )
      .optional(),
    from: z.array(CredentialSourceSchema).min(1).default(BEARER),
    /** Envoy's ext_authz timeout defaults to 200 ms, so the introspection call must finish well before. */
    timeoutMs: z.number().int().min(10).max(10_000).default(150),
    /** Active answers are cached until the token's `exp`, but never longer than this. */
    cacheMaxSeconds: z.number().int().min(0).max(86_400).default(300),
    /** Inactive answers are cached this long, so a replayed dead token costs one call, not one per request. */
    negativeCacheSeconds: z.number().int().min(0).max(3_600).default(10),
    cacheSize: z.number().int().min(1).max(1_000_000).default(10_000),
    /**
     * What happens when the endpoint cannot answer: `closed` (503 to the caller) or `open` (the
     * request goes on as an anonymous caller, without identity headers).
     */
    failureMode: z.enum(["closed", "open"]).default("closed"),
    /** When set, an active token must name one of these in `aud`. */
    audiences: z.array(z.string().min(1)).min(1).optional(),
    /** When set, an active token's `iss` must equal it. */
    issuer: z.string().min(1).optional(),
    /** The answer's field naming the consumer; `sub`, then `client_id`, then `username` by default. */
    consumerField: z.string().min(1).optional(),
    /** The consumer records this provider's answers may name (as for JWT providers' `consumers`). */
    consumers: z.array(Name).optional(),
    planField: z.string().min(1).optional(),
    maxTokenBytes: z.number().int().min(64).max(65_536).default(4_096),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.clientSecret === undefined) === (p.clientSecretEnv === undefined)) {
      ctx.addIssue({
        code: "custom",
        message: "give exactly one of clientSecret or clientSecretEnv",
        path: [],
      });
    }
    const urlProblem = insecureUrlProblem(p.introspectionUrl, p.allowInsecureLoopback);
    if (urlProblem) ctx.addIssue({ code: "custom", path: ["introspectionUrl"], message: urlProblem });
  });
export type OauthProvider = z.infer<typeof OauthProviderSchema>;

export const ConsumerSchema = z
  .object({
    name: Name,
    /** The plan (tier) rate limits can key on. */
    plan: z.string().min(1).max(64).optional(),
    /** Scopes granted to every API key of this consumer. */
    scopes: z.array(z.string().min(1)).optional(),
    metadata: z.record(z.string(), z.string()).optional(),
    /** A disabled consumer's keys are refused, without revoking them one by one. */
    disabled: z.boolean().default(false),
  })
  .strict();
export type Consumer = z.infer<typeof ConsumerSchema>;

export const ApiKeySchema = z
  .object({
    name: Name,
    consumer: Name,
    /** SHA-256 of the key, hex; the plaintext is never stored. */
    sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, "a hex SHA-256")
      .transform((s) => s.toLowerCase()),
    /** The first characters of the key, to tell keys apart in listings. */
    prefix: z.string().max(12).optional(),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
    revoked: z.boolean().default(false),
    /** Scopes of this key, added to its consumer's. */
    scopes: z.array(z.string().min(1)).optional(),
  })
  .strict();
export type ApiKey = z.infer<typeof ApiKeySchema>;

/** One scope: no spaces or commas, which separate scopes in headers and tokens. */
const Scope = z
  .string()
  .min(1)
  .regex(/^[^\s,]+$/, "one scope, without spaces or commas");

/** A scope list: a list, or one string of scopes separated by spaces or commas (as OAuth writes them). */
const Scopes = z.union([
  z.array(Scope),
  z.string().transform((v) => v.split(/[\s,]+/).filter((s) => s.length > 0)),
]);

/** A claim's accepted values: one value or a list of them; always a list once parsed. */
const ClaimValues = z
  .union([z.string(), z.array(z.string()).min(1)])
  .transform((v) => (typeof v === "string" ? [v] : v));

export const AuthPolicySchema = z
  .object({
    name: Name,
    /** Callers without credentials pass as `anonymous` (identity headers removed, limits per IP). */
    allowAnonymous: z.boolean().default(false),
    /**
     * Accepted credentials, tried in this order: a kind (`jwt`, `apiKey`, `oauth`: every provider of
     * that kind) or the name of a JWT or OAuth provider.
     */
    accept: z
      .array(z.union([z.enum(CREDENTIAL_KINDS), Name]))
      .min(1)
      .default(["apiKey"]),
    requiredScopes: Scopes.optional(),
    /** `all` (default): every required scope; `any`: at least one. */
    scopesMode: z.enum(["any", "all"]).default("all"),
    /** Only these consumers pass (403 for others). */
    consumers: z.array(Name).min(1, "list at least one consumer, or leave consumers out").optional(),
    /** Claim name → accepted values; the claim (or one of its list items) must equal one of them. */
    requiredClaims: z.record(z.string().min(1), ClaimValues).optional(),
    /** Remove the credential before the request goes upstream; ext-authz's `settings.stripCredentials` (on by default) when omitted. */
    stripCredentials: z.boolean().optional(),
  })
  .strict();
export type AuthPolicy = z.infer<typeof AuthPolicySchema>;

export const SettingsSchema = z
  .object({
    /** Remove the credential that was used (header, query parameter or cookie) before the upstream. */
    stripCredentials: z.boolean().default(true),
    /** The policy of routes whose context extensions name none; otherwise any provider, no anonymous. */
    defaultPolicy: Name.optional(),
    /** Verified JWTs remembered per provider (each entry expires no later than its token). */
    tokenCacheSize: z.number().int().min(1).max(1_000_000).default(10_000),
    /** The `realm` of `WWW-Authenticate` challenges. */
    realm: z
      .string()
      .regex(/^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/, "printable ASCII without quotes or backslashes")
      .default("portico"),
    /** The scopes header is cut (at a scope boundary) beyond this many bytes, to stay clear of header limits. */
    maxScopesHeaderBytes: z.number().int().min(64).max(16_384).default(2_048),
  })
  .strict();
export type Settings = z.infer<typeof SettingsSchema>;

export const PolicySchema = z
  .object({
    jwtProviders: z.array(JwtProviderSchema).default([]),
    oauthProviders: z.array(OauthProviderSchema).default([]),
    /** Where API keys are read from; `x-api-key` by default. */
    apiKeySources: z
      .array(CredentialSourceSchema)
      .min(1)
      .default([{ header: "x-api-key" }]),
    consumers: z.array(ConsumerSchema).default([]),
    apiKeys: z.array(ApiKeySchema).default([]),
    authPolicies: z.array(AuthPolicySchema).default([]),
    settings: SettingsSchema.default(SettingsSchema.parse({})),
  })
  .strict();
/** The document as written (defaults not yet applied). */
export type PolicyInput = z.input<typeof PolicySchema>;
export type PolicyDocument = z.infer<typeof PolicySchema>;
