import { createHash } from "node:crypto";
import { buildApiKeyIndex, type ApiKeyIndex } from "../apikey/verify.js";
import type { CredentialKind } from "../identity.js";
import { jwkProblem, keyFitsAlg } from "../jwt/keys.js";
import { fromZod, type FieldProblem, type PolicyError, type Result } from "./errors.js";
import {
  CREDENTIAL_KINDS,
  PolicySchema,
  type AuthPolicy,
  type Consumer,
  type CredentialSource,
  type JwtProvider,
  type OauthProvider,
  type PolicyDocument,
  type Settings,
} from "./schema.js";

export interface AcceptedProvider {
  readonly kind: CredentialKind;
  /** The provider's name; `apiKey` for API keys. */
  readonly name: string;
}

/** What one route requires, ready for the decision (sets and maps instead of lists). */
export interface RoutePolicy {
  /** The auth policy's name, or `inline` when built from context extensions alone. */
  readonly name: string;
  /** Tried in this order; the first provider that recognises a presented credential decides. */
  readonly accept: readonly AcceptedProvider[];
  readonly allowAnonymous: boolean;
  readonly requiredScopes: readonly string[];
  readonly scopesMode: "any" | "all";
  readonly consumers: ReadonlySet<string> | undefined;
  readonly requiredClaims: ReadonlyMap<string, ReadonlySet<string>>;
  readonly stripCredentials: boolean;
}

/** A validated policy with every lookup precomputed: the hot path only reads maps. */
export interface CompiledPolicy {
  /** A digest of the document, for logs, metrics and caches keyed by policy. */
  readonly revision: string;
  readonly document: PolicyDocument;
  readonly jwtProviders: ReadonlyMap<string, JwtProvider>;
  readonly oauthProviders: ReadonlyMap<string, OauthProvider>;
  readonly apiKeySources: readonly CredentialSource[];
  readonly consumers: ReadonlyMap<string, Consumer>;
  readonly apiKeys: ApiKeyIndex;
  readonly authPolicies: ReadonlyMap<string, RoutePolicy>;
  /** For routes whose context extensions name no policy and no `accept`. */
  readonly defaultPolicy: RoutePolicy;
  readonly settings: Settings;
}

/** The providers an `accept` list may name, by name and by kind. */
export interface ProviderCatalog {
  readonly jwtProviders: ReadonlyMap<string, unknown>;
  readonly oauthProviders: ReadonlyMap<string, unknown>;
}

/**
 * Resolves `accept` entries: a provider name, or a kind (`jwt`, `oauth`, `apiKey`) standing for
 * every provider of that kind, in the order written, without duplicates.
 */
export function resolveAccept(
  entries: readonly string[],
  catalog: ProviderCatalog,
): Result<AcceptedProvider[], string> {
  const out: AcceptedProvider[] = [];
  const seen = new Set<string>();
  const push = (kind: CredentialKind, name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    out.push({ kind, name });
  };
  for (const entry of entries) {
    if (entry === "apiKey") push("apiKey", "apiKey");
    else if (entry === "jwt" || entry === "oauth") {
      const map = entry === "jwt" ? catalog.jwtProviders : catalog.oauthProviders;
      if (map.size === 0)
        return { ok: false, error: `accepts ${entry}, but no ${entry} provider is configured` };
      for (const name of map.keys()) push(entry, name);
    } else if (catalog.jwtProviders.has(entry)) push("jwt", entry);
    else if (catalog.oauthProviders.has(entry)) push("oauth", entry);
    else return { ok: false, error: `no provider named ${entry}` };
  }
  return { ok: true, value: out };
}

export function toClaimRequirements(
  claims: Readonly<Record<string, string | readonly string[]>> | undefined,
): Map<string, ReadonlySet<string>> {
  const out = new Map<string, ReadonlySet<string>>();
  for (const [name, values] of Object.entries(claims ?? {})) {
    out.set(name, new Set(typeof values === "string" ? [values] : values));
  }
  return out;
}

function compileAuthPolicy(
  p: AuthPolicy,
  catalog: ProviderCatalog,
  settings: Settings,
): Result<RoutePolicy, string> {
  const accept = resolveAccept(p.accept, catalog);
  if (!accept.ok) return accept;
  return {
    ok: true,
    value: {
      name: p.name,
      accept: accept.value,
      allowAnonymous: p.allowAnonymous,
      requiredScopes: p.requiredScopes ?? [],
      scopesMode: p.scopesMode,
      consumers: p.consumers === undefined ? undefined : new Set(p.consumers),
      requiredClaims: toClaimRequirements(p.requiredClaims),
      stripCredentials: p.stripCredentials ?? settings.stripCredentials,
    },
  };
}

function checkUnique<T>(
  items: readonly T[],
  key: (t: T) => string,
  path: string,
  what: string,
): FieldProblem[] {
  const seen = new Set<string>();
  const problems: FieldProblem[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    if (seen.has(k)) problems.push({ field: `${path}[${i}]`, reason: `duplicate ${what} ${k}` });
    seen.add(k);
  });
  return problems;
}

function checkJwtProvider(p: JwtProvider, i: number): FieldProblem[] {
  const problems: FieldProblem[] = [];
  if (!p.jwks) return problems;
  p.jwks.keys.forEach((jwk, k) => {
    const problem = jwkProblem(jwk, "inline");
    if (problem) problems.push({ field: `jwtProviders[${i}].jwks.keys[${k}]`, reason: problem });
  });
  if (problems.length === 0 && !p.jwks.keys.some((jwk) => p.algorithms.some((alg) => keyFitsAlg(jwk, alg)))) {
    problems.push({
      field: `jwtProviders[${i}].jwks`,
      reason: `no key can verify any of the pinned algorithms (${p.algorithms.join(", ")})`,
    });
  }
  return problems;
}

/** Validates a policy document (already parsed from YAML or JSON) and builds its lookups. */
export function compilePolicy(input: unknown): Result<CompiledPolicy, PolicyError> {
  const parsed = PolicySchema.safeParse(input);
  if (!parsed.success) {
    return {
      ok: false,
      error: { code: "invalid_policy", message: "the policy is not valid", details: fromZod(parsed.error) },
    };
  }
  const doc = parsed.data;
  const problems: FieldProblem[] = [];

  const providerNames = [
    ...doc.jwtProviders.map((p, i) => ({ name: p.name, field: `jwtProviders[${i}].name` })),
    ...doc.oauthProviders.map((p, i) => ({ name: p.name, field: `oauthProviders[${i}].name` })),
  ];
  const seenProviders = new Set<string>();
  for (const { name, field } of providerNames) {
    if ((CREDENTIAL_KINDS as readonly string[]).includes(name)) {
      problems.push({ field, reason: `${name} is a credential kind; give the provider another name` });
    } else if (seenProviders.has(name)) {
      problems.push({ field, reason: `duplicate provider name ${name}` });
    }
    seenProviders.add(name);
  }
  doc.jwtProviders.forEach((p, i) => problems.push(...checkJwtProvider(p, i)));
  problems.push(...checkUnique(doc.consumers, (c) => c.name, "consumers", "consumer"));
  problems.push(...checkUnique(doc.apiKeys, (k) => k.name, "apiKeys", "API key name"));
  problems.push(...checkUnique(doc.apiKeys, (k) => k.sha256, "apiKeys", "API key hash"));
  problems.push(...checkUnique(doc.authPolicies, (p) => p.name, "authPolicies", "auth policy"));

  const consumers = new Map(doc.consumers.map((c) => [c.name, c]));
  doc.apiKeys.forEach((k, i) => {
    if (!consumers.has(k.consumer))
      problems.push({ field: `apiKeys[${i}].consumer`, reason: `no consumer named ${k.consumer}` });
  });

  const catalog: ProviderCatalog = {
    jwtProviders: new Map(doc.jwtProviders.map((p) => [p.name, p])),
    oauthProviders: new Map(doc.oauthProviders.map((p) => [p.name, p])),
  };
  const authPolicies = new Map<string, RoutePolicy>();
  doc.authPolicies.forEach((p, i) => {
    const compiled = compileAuthPolicy(p, catalog, doc.settings);
    if (compiled.ok) authPolicies.set(p.name, compiled.value);
    else problems.push({ field: `authPolicies[${i}].accept`, reason: compiled.error });
  });

  let defaultPolicy: RoutePolicy | undefined;
  if (doc.settings.defaultPolicy !== undefined) {
    defaultPolicy = authPolicies.get(doc.settings.defaultPolicy);
    if (!defaultPolicy && !problems.some((p) => p.field.startsWith("authPolicies"))) {
      problems.push({
        field: "settings.defaultPolicy",
        reason: `no auth policy named ${doc.settings.defaultPolicy}`,
      });
    }
  }

  if (problems.length > 0) {
    return {
      ok: false,
      error: { code: "invalid_policy", message: "the policy is not valid", details: problems },
    };
  }

  const accept: AcceptedProvider[] = [
    ...doc.jwtProviders.map((p) => ({ kind: "jwt" as const, name: p.name })),
    ...doc.oauthProviders.map((p) => ({ kind: "oauth" as const, name: p.name })),
    ...(doc.apiKeys.length > 0 ? [{ kind: "apiKey" as const, name: "apiKey" }] : []),
  ];
  defaultPolicy ??= {
    name: "default",
    accept,
    allowAnonymous: false,
    requiredScopes: [],
    scopesMode: "all",
    consumers: undefined,
    requiredClaims: new Map(),
    stripCredentials: doc.settings.stripCredentials,
  };

  return {
    ok: true,
    value: {
      revision: createHash("sha256").update(JSON.stringify(doc)).digest("hex").slice(0, 16),
      document: doc,
      jwtProviders: new Map(doc.jwtProviders.map((p) => [p.name, p])),
      oauthProviders: new Map(doc.oauthProviders.map((p) => [p.name, p])),
      apiKeySources: doc.apiKeySources,
      consumers,
      apiKeys: buildApiKeyIndex(consumers, doc.apiKeys),
      authPolicies,
      defaultPolicy,
      settings: doc.settings,
    },
  };
}
