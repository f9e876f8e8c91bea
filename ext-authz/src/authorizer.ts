import type { Logger } from "@portico/common";
import { verifyApiKey } from "./apikey/verify.js";
import { systemClock, type Clock } from "./clock.js";
import {
  configErrorDecision,
  decide,
  internalErrorDecision,
  noPolicyDecision,
  type AuthOutcome,
  type Decision,
  type DecideSettings,
} from "./decide/decide.js";
import { extractCredential, type FoundCredential } from "./decide/extract.js";
import type { RequestAttributes } from "./decide/request.js";
import { routePolicyFrom } from "./decide/route.js";
import type { Identity } from "./identity.js";
import { InlineJwks, RemoteJwks, type JwksSource } from "./jwt/jwks.js";
import { JwtVerifier, peekIssuer, tokenCacheKey } from "./jwt/verifier.js";
import { AuthzMetrics } from "./metrics.js";
import { Introspector } from "./oauth/introspection.js";
import type { CompiledPolicy, RoutePolicy } from "./policy/compile.js";
import type { Result, JwtProvider, OauthProvider } from "@portico/contract";

export interface AuthorizerOptions {
  /** Without one (a policy delivered over xDS later), every check answers 503 until `setPolicy`. */
  policy?: CompiledPolicy;
  clock?: Clock;
  metrics?: AuthzMetrics;
  logger?: Logger;
  /** For JWKS and introspection calls (tests inject failures through it). */
  fetch?: typeof fetch;
  /** Where `clientSecretEnv` secrets are read; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
}

/** Parsed context extensions are remembered per distinct map; routes are few, so this stays small. */
const MAX_ROUTE_ENTRIES = 4_096;

/**
 * Answers one Check from memory: reads the route's requirements, finds the credential, verifies
 * it (cached JWTs, hashed API keys, cached introspection answers) and decides. A new policy can
 * be swapped in at any time; providers whose settings did not change keep their JWKS and caches.
 */
export class Authorizer {
  private policy: CompiledPolicy | undefined;
  private jwt = new Map<string, { config: string; verifier: JwtVerifier }>();
  private oauth = new Map<string, { config: string; introspector: Introspector }>();
  private routes = new Map<string, Result<RoutePolicy, string>>();
  private settings!: DecideSettings;
  private readonly clock: Clock;
  readonly metrics: AuthzMetrics;
  private readonly logger: Logger | undefined;

  constructor(private readonly opts: AuthorizerOptions) {
    this.clock = opts.clock ?? systemClock;
    this.metrics = opts.metrics ?? new AuthzMetrics();
    this.logger = opts.logger;
    if (opts.policy) this.setPolicy(opts.policy);
  }

  get revision(): string | undefined {
    return this.policy?.revision;
  }

  /** Whether a policy is installed; until then every check fails closed. */
  get ready(): boolean {
    return this.policy !== undefined;
  }

  /**
   * Installs a new policy. Throws (keeping the old one) when a provider cannot be built, e.g. an
   * OAuth client secret's environment variable is not set.
   */
  setPolicy(policy: CompiledPolicy): void {
    const jwt = new Map<string, { config: string; verifier: JwtVerifier }>();
    for (const provider of policy.jwtProviders.values()) {
      const config = JSON.stringify([provider, policy.settings.tokenCacheSize]);
      const existing = this.jwt.get(provider.name);
      jwt.set(
        provider.name,
        existing?.config === config ? existing : { config, verifier: this.buildVerifier(provider, policy) },
      );
    }
    const oauth = new Map<string, { config: string; introspector: Introspector }>();
    for (const provider of policy.oauthProviders.values()) {
      const config = JSON.stringify(provider);
      const existing = this.oauth.get(provider.name);
      oauth.set(
        provider.name,
        existing?.config === config ? existing : { config, introspector: this.buildIntrospector(provider) },
      );
    }
    this.policy = policy;
    this.jwt = jwt;
    this.oauth = oauth;
    this.routes = new Map();
    this.settings = {
      realm: policy.settings.realm,
      maxScopesHeaderBytes: policy.settings.maxScopesHeaderBytes,
    };
  }

  /** Fetches every remote JWKS so the first requests find keys in memory. Never throws. */
  async warm(): Promise<void> {
    await Promise.all([...this.jwt.values()].map((j) => j.verifier.jwks.warm()));
  }

  private buildVerifier(provider: JwtProvider, policy: CompiledPolicy): JwtVerifier {
    let jwks: JwksSource;
    if (provider.jwks) jwks = new InlineJwks(provider.jwks.keys);
    else {
      jwks = new RemoteJwks({
        uri: provider.jwksUri!,
        clock: this.clock,
        cacheMs: provider.jwksCacheSeconds * 1000,
        cooldownMs: provider.jwksRefetchCooldownSeconds * 1000,
        timeoutMs: provider.jwksTimeoutMs,
        fetch: this.opts.fetch,
        onFetch: (e) => {
          this.metrics.jwksFetches.inc({
            provider: provider.name,
            trigger: e.trigger,
            result: e.ok ? "ok" : "error",
          });
          if (!e.ok)
            this.logger?.warn(
              { provider: provider.name, trigger: e.trigger, err: e.error },
              "JWKS fetch failed",
            );
          else
            this.logger?.info({ provider: provider.name, trigger: e.trigger, keys: e.keys }, "JWKS fetched");
          if (e.skipped.length > 0)
            this.logger?.warn({ provider: provider.name, skipped: e.skipped }, "JWKS keys left out");
        },
      });
    }
    return new JwtVerifier(provider, {
      clock: this.clock,
      jwks,
      cacheSize: policy.settings.tokenCacheSize,
      consumers: () => this.policy!.consumers,
      onCache: (hit) => this.metrics.cacheLookup("jwt", hit),
      onEvict: () => this.metrics.cacheEvictions.inc({ cache: "jwt" }),
    });
  }

  private buildIntrospector(provider: OauthProvider): Introspector {
    return new Introspector(provider, {
      clock: this.clock,
      consumers: () => this.policy!.consumers,
      fetch: this.opts.fetch,
      env: this.opts.env,
      onCall: (result) => this.metrics.introspections.inc({ provider: provider.name, result }),
      onCache: (hit) => this.metrics.cacheLookup("introspection", hit),
      onEvict: () => this.metrics.cacheEvictions.inc({ cache: "introspection" }),
    });
  }

  private routeFor(
    policy: CompiledPolicy,
    ext: Readonly<Record<string, string>>,
  ): Result<RoutePolicy, string> {
    const key = JSON.stringify(ext);
    let route = this.routes.get(key);
    if (route === undefined) {
      route = routePolicyFrom(policy, ext);
      // Logged once per distinct settings, not once per request on a misconfigured route.
      if (!route.ok)
        this.logger?.error({ contextExtensions: ext, err: route.error }, "bad ext_authz context extensions");
      if (this.routes.size >= MAX_ROUTE_ENTRIES) this.routes.clear();
      this.routes.set(key, route);
    }
    return route;
  }

  async check(req: RequestAttributes): Promise<Decision> {
    return this.checkNow(req);
  }

  /**
   * `check` without a promise when nothing waits on I/O (API keys, cached tokens, refusals): the
   * decision itself then; a promise of it only when a token is verified or introspected.
   */
  checkNow(req: RequestAttributes): Decision | Promise<Decision> {
    const started = performance.now();
    try {
      const route = this.policy ? this.routeFor(this.policy, req.contextExtensions) : undefined;
      if (!route) return this.done(noPolicyDecision(), started);
      if (!route.ok) return this.done(configErrorDecision(route.error), started);
      const outcome = this.authenticate(route.value, req);
      if (outcome instanceof Promise) {
        return outcome.then(
          (o) => {
            try {
              return this.done(decide(route.value, o, req, this.settings), started);
            } catch (err) {
              return this.failed(err as Error, started);
            }
          },
          (err: Error) => this.failed(err, started),
        );
      }
      return this.done(decide(route.value, outcome, req, this.settings), started);
    } catch (err) {
      return this.failed(err as Error, started);
    }
  }

  private failed(err: Error, started: number): Decision {
    this.logger?.error({ err }, "check failed");
    return this.done(internalErrorDecision(err.message), started);
  }

  private done(decision: Decision, started: number): Decision {
    const result = decision.allowed ? "allow" : decision.status >= 500 ? "error" : "deny";
    this.metrics.checked(result, decision.code, (performance.now() - started) / 1000);
    // The decision's log line is the gRPC server's: it also knows the caller's trace.
    return decision;
  }

  /**
   * Finds and verifies the caller's credential; the first accepted provider that recognises one
   * decides. A promise only when a token must be verified or introspected.
   */
  authenticate(route: RoutePolicy, req: RequestAttributes): AuthOutcome | Promise<AuthOutcome> {
    const policy = this.policy;
    if (!policy) return { kind: "none" };
    let bearerPresented = false;
    let memo: { token: string; key: string; iss: string | undefined } | undefined;

    for (const accepted of route.accept) {
      if (accepted.kind === "apiKey") {
        const found = extractCredential(req, policy.apiKeySources);
        if (found.kind === "conflict") return { kind: "conflict", scheme: "apiKey" };
        if (found.kind === "none") continue;
        const r = verifyApiKey(policy.apiKeys, found.value, this.clock());
        if (r.ok) return authenticated(r.identity, found.where);
        return this.refused("apiKey", r.reason, "apiKey");
      }

      if (accepted.kind === "jwt") {
        const entry = this.jwt.get(accepted.name);
        if (!entry) continue;
        const verifier = entry.verifier;
        const found = extractCredential(req, verifier.provider.from);
        if (found.kind === "conflict") return { kind: "conflict", scheme: "bearer" };
        if (found.kind === "none") continue;
        bearerPresented = true;
        const token = found.value;
        if (token.length > verifier.provider.maxTokenBytes)
          return this.refused(accepted.name, "too_large", "bearer");
        if (memo?.token !== token) memo = { token, key: tokenCacheKey(token), iss: undefined };
        const cached = verifier.fromCache(memo.key);
        if (cached) {
          if (cached.ok) return authenticated(cached.identity, found.where);
          return this.refused(accepted.name, cached.reason, "bearer");
        }
        memo.iss ??= peekIssuer(token);
        // Not this provider's token (another issuer, or not a JWT): another accepted provider may know it.
        if (memo.iss !== verifier.provider.issuer) continue;
        return verifier.verify(token, memo.key).then((r): AuthOutcome => {
          if (r.ok) return authenticated(r.identity, found.where);
          if (r.reason === "jwks_unavailable") {
            this.metrics.credentialFailure(accepted.name, r.reason);
            return { kind: "unavailable", provider: accepted.name, failOpen: false, reason: r.reason };
          }
          return this.refused(accepted.name, r.reason, "bearer");
        });
      }

      const entry = this.oauth.get(accepted.name);
      if (!entry) continue;
      const found = extractCredential(req, entry.introspector.provider.from);
      if (found.kind === "conflict") return { kind: "conflict", scheme: "bearer" };
      if (found.kind === "none") continue;
      return entry.introspector.introspect(found.value).then((r): AuthOutcome => {
        if (r.ok) return authenticated(r.identity, found.where);
        if (r.reason === "unavailable") {
          this.metrics.credentialFailure(accepted.name, "unavailable");
          return {
            kind: "unavailable",
            provider: accepted.name,
            failOpen: entry.introspector.provider.failureMode === "open",
            reason: r.detail,
          };
        }
        return this.refused(accepted.name, r.reason, "bearer");
      });
    }
    if (bearerPresented) return this.refused("none", "no accepted provider recognises the token", "bearer");
    return { kind: "none" };
  }

  private refused(provider: string, reason: string, scheme: "bearer" | "apiKey"): AuthOutcome {
    this.metrics.credentialFailure(provider, reason);
    return { kind: "invalid", scheme, provider, reason };
  }
}

function authenticated(identity: Identity, used: readonly FoundCredential[]): AuthOutcome {
  return { kind: "authenticated", identity, used };
}
