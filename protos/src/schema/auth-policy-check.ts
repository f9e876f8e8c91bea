import { jwkProblem, keyFitsAlg } from "./jwk.js";
import { zodProblems, type FieldProblem, type Result } from "./problems.js";
import {
  CREDENTIAL_KINDS,
  isReservedConsumer,
  PolicySchema,
  type JwtProvider,
  type PolicyDocument,
} from "./auth.js";

/** How a caller proves who they are. */
export type CredentialKind = (typeof CREDENTIAL_KINDS)[number];

/** A policy document that cannot be used, with each field and what is wrong with it. */
export interface PolicyError {
  code: "invalid_policy" | "unreadable_policy";
  message: string;
  details: FieldProblem[];
}

export interface AcceptedProvider {
  readonly kind: CredentialKind;
  /** The provider's name; `apiKey` for API keys. */
  readonly name: string;
}

/** The providers an `accept` list may name, by name and by kind. */
export interface ProviderCatalog {
  readonly jwtProviders: ReadonlyMap<string, unknown>;
  readonly oauthProviders: ReadonlyMap<string, unknown>;
}

/** A document that passed every rule, with each auth policy's `accept` list resolved. */
export interface CheckedPolicy {
  readonly document: PolicyDocument;
  readonly catalog: ProviderCatalog;
  /** Auth policy name → the providers it accepts, in order. */
  readonly accept: ReadonlyMap<string, readonly AcceptedProvider[]>;
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

const invalid = (details: FieldProblem[]): { ok: false; error: PolicyError } => ({
  ok: false,
  error: { code: "invalid_policy", message: "the policy is not valid", details },
});

/**
 * Every rule an authentication policy document must follow: its shape, unique names, usable
 * inline keys, API keys that name a consumer, and `accept` lists that name providers. The control
 * plane refuses a write that breaks one; ext-authz refuses (NACKs) a document that does.
 */
export function checkPolicyDocument(input: unknown): Result<CheckedPolicy, PolicyError> {
  const parsed = PolicySchema.safeParse(input);
  if (!parsed.success) return invalid(zodProblems(parsed.error));
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

  const consumers = new Set(doc.consumers.map((c) => c.name));
  doc.apiKeys.forEach((k, i) => {
    if (!consumers.has(k.consumer))
      problems.push({ field: `apiKeys[${i}].consumer`, reason: `no consumer named ${k.consumer}` });
  });
  const checkLinks = (list: readonly { consumers?: readonly string[] | undefined }[], path: string) =>
    list.forEach((p, i) =>
      p.consumers?.forEach((name, k) => {
        if (!consumers.has(name))
          problems.push({ field: `${path}[${i}].consumers[${k}]`, reason: `no consumer named ${name}` });
      }),
    );
  checkLinks(doc.jwtProviders, "jwtProviders");
  checkLinks(doc.oauthProviders, "oauthProviders");
  doc.consumers.forEach((c, i) => {
    if (isReservedConsumer(c.name))
      problems.push({
        field: `consumers[${i}].name`,
        reason: `${c.name} is reserved for callers without credentials`,
      });
  });

  const catalog: ProviderCatalog = {
    jwtProviders: new Map(doc.jwtProviders.map((p) => [p.name, p])),
    oauthProviders: new Map(doc.oauthProviders.map((p) => [p.name, p])),
  };
  const accept = new Map<string, readonly AcceptedProvider[]>();
  doc.authPolicies.forEach((p, i) => {
    const resolved = resolveAccept(p.accept, catalog);
    if (resolved.ok) accept.set(p.name, resolved.value);
    else problems.push({ field: `authPolicies[${i}].accept`, reason: resolved.error });
  });

  const fallback = doc.settings.defaultPolicy;
  if (
    fallback !== undefined &&
    !accept.has(fallback) &&
    !problems.some((p) => p.field.startsWith("authPolicies"))
  ) {
    problems.push({ field: "settings.defaultPolicy", reason: `no auth policy named ${fallback}` });
  }

  if (problems.length > 0) return invalid(problems);
  return { ok: true, value: { document: doc, catalog, accept } };
}

/** One line a person can act on. */
export function formatPolicyError(e: PolicyError): string {
  return e.details.length
    ? `${e.message}: ${e.details.map((d) => `${d.field}: ${d.reason}`).join("; ")}`
    : e.message;
}
