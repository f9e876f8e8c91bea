import { createHash } from "node:crypto";
import {
  checkPolicyDocument,
  type AcceptedProvider,
  type AuthPolicy,
  type Consumer,
  type CredentialSource,
  type JwtProvider,
  type OauthProvider,
  type PolicyDocument,
  type PolicyError,
  type Result,
  type Settings,
} from "@portico/contract";
import { buildApiKeyIndex, type ApiKeyIndex } from "../apikey/verify.js";

export { resolveAccept, type AcceptedProvider, type ProviderCatalog } from "@portico/contract";

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

export function toClaimRequirements(
  claims: Readonly<Record<string, string | readonly string[]>> | undefined,
): Map<string, ReadonlySet<string>> {
  const out = new Map<string, ReadonlySet<string>>();
  for (const [name, values] of Object.entries(claims ?? {})) {
    out.set(name, new Set(typeof values === "string" ? [values] : values));
  }
  return out;
}

function routePolicy(p: AuthPolicy, accept: readonly AcceptedProvider[], settings: Settings): RoutePolicy {
  return {
    name: p.name,
    accept,
    allowAnonymous: p.allowAnonymous,
    requiredScopes: p.requiredScopes ?? [],
    scopesMode: p.scopesMode,
    consumers: p.consumers === undefined ? undefined : new Set(p.consumers),
    requiredClaims: toClaimRequirements(p.requiredClaims),
    stripCredentials: p.stripCredentials ?? settings.stripCredentials,
  };
}

/** Checks a policy document (already parsed from YAML or JSON) by the contract's rules and builds its lookups. */
export function compilePolicy(input: unknown): Result<CompiledPolicy, PolicyError> {
  const checked = checkPolicyDocument(input);
  if (!checked.ok) return checked;
  const doc = checked.value.document;
  const consumers = new Map(doc.consumers.map((c) => [c.name, c]));
  const authPolicies = new Map<string, RoutePolicy>(
    doc.authPolicies.map((p) => [p.name, routePolicy(p, checked.value.accept.get(p.name)!, doc.settings)]),
  );
  let defaultPolicy =
    doc.settings.defaultPolicy === undefined ? undefined : authPolicies.get(doc.settings.defaultPolicy);

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
