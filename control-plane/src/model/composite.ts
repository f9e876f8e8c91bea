import { compositeProblems, ALL_IDENTITY_HEADERS as IDENTITY_HEADERS } from "@portico/contract";
import type { FieldProblem } from "./errors.js";
import { hasServiceLimits } from "./ratelimit-enforcement.js";
import type { AuthPolicy, CompositeRoute, Config, Route } from "./schema.js";

type CompositePart = CompositeRoute["parts"][number];
import type { Reference } from "./validate.js";

/** What composite routes and gateways' aggregator settings refer to. */
export function compositeReferences(config: Config): Reference[] {
  const out: Reference[] = [];
  config.gateways.forEach((g, gi) => {
    if (g.aggregator) {
      out.push({
        from: { kind: "gateways", name: g.name, field: `gateways[${gi}].aggregator.upstream` },
        to: { kind: "upstreams", name: g.aggregator.upstream },
      });
    }
  });
  config.compositeRoutes.forEach((c, i) => {
    const from = (field: string) => ({
      kind: "compositeRoutes" as const,
      name: c.name,
      field: `compositeRoutes[${i}].${field}`,
    });
    out.push({ from: from("gateway"), to: { kind: "gateways", name: c.gateway } });
    c.parts.forEach((p, pi) =>
      out.push({ from: from(`parts[${pi}].upstream`), to: { kind: "upstreams", name: p.upstream } }),
    );
    if (c.authPolicy !== undefined)
      out.push({ from: from("authPolicy"), to: { kind: "authPolicies", name: c.authPolicy } });
    if (c.rateLimitPolicy !== undefined)
      out.push({ from: from("rateLimitPolicy"), to: { kind: "rateLimitPolicies", name: c.rateLimitPolicy } });
  });
  return out;
}

/**
 * Composite routes beyond their shape. The aggregator's own rules (paths, part keys, deadlines,
 * parameters) are checked with its code, so what is stored is what it accepts; like Envoy's and
 * ext-authz's checks they can be skipped, so a NACK can be exercised.
 */
export function compositeRouteProblems(config: Config, serviceChecks: boolean): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
  config.gateways.forEach((g, gi) => {
    if (!g.aggregator) return;
    const at = `gateways[${gi}].aggregator`;
    const u = upstreams.get(g.aggregator.upstream);
    if (u?.protocol === "grpc")
      problems.push({
        field: `${at}.upstream`,
        reason: `upstream '${u.name}' must have protocol http1 or http2`,
      });
    const port = g.aggregator.partsListener.port;
    const taken = g.listeners.find((l) => l.port === port);
    if (taken && serviceChecks) {
      problems.push({
        field: `${at}.partsListener.port`,
        reason: `port ${port} is already used by listener '${taken.name}' of this gateway`,
      });
    }
  });
  config.compositeRoutes.forEach((c, i) => {
    const at = `compositeRoutes[${i}]`;
    if (serviceChecks) problems.push(...compositeProblems(c, at));
    const g = gateways.get(c.gateway);
    if (!g) return; // the reference check reports it
    if (!g.aggregator) {
      problems.push({
        field: `${at}.gateway`,
        reason: `gateway '${c.gateway}' has no aggregator to serve composite routes; set gateways.aggregator`,
      });
    }
    if (c.listener !== undefined && !g.listeners.some((l) => l.name === c.listener)) {
      problems.push({
        field: `${at}.listener`,
        reason: `gateway '${c.gateway}' has no listener named '${c.listener}'`,
      });
    }
    // Route names key rate-limit counters and name Envoy's routes: one name, one route per gateway.
    if (config.routes.some((r) => r.gateway === c.gateway && r.name === c.name)) {
      problems.push({
        field: `${at}.name`,
        reason: `gateway '${c.gateway}' already has a route named '${c.name}'`,
      });
    }
    // Envoy removes identity headers from every request it receives; only authentication sets them.
    if (c.authPolicy === undefined) {
      c.parts.forEach((p, pi) => {
        const identity = IDENTITY_HEADERS.find((h) => p.path.toLowerCase().includes(`{header.${h}}`));
        if (identity) {
          problems.push({
            field: `${at}.parts[${pi}].path`,
            reason: `${identity} is set only on authenticated calls; give the route an authPolicy`,
          });
        }
      });
    }
    if (c.authPolicy !== undefined && !g.extAuthz) {
      problems.push({
        field: `${at}.authPolicy`,
        reason: `gateway '${c.gateway}' has no extAuthz service to enforce it; set gateways.extAuthz`,
      });
    }
    const rlp = config.rateLimitPolicies.find((p) => p.name === c.rateLimitPolicy);
    if (rlp && hasServiceLimits(rlp) && !g.rateLimit) {
      problems.push({
        field: `${at}.rateLimitPolicy`,
        reason: `gateway '${c.gateway}' has no rateLimit service to enforce it; set gateways.rateLimit`,
      });
    }
  });
  problems.push(...partPolicyProblems(config));
  return problems;
}

/** Why a composite route's authPolicy lets through a caller the part's route would refuse; none when it does not. */
function weakerAuth(config: Config, composite: AuthPolicy | undefined, part: AuthPolicy): string | undefined {
  if (composite === undefined) return "it has no authPolicy";
  if (composite.name === part.name) return undefined;
  if (composite.allowAnonymous && !part.allowAnonymous)
    return `'${composite.name}' lets anonymous callers in`;
  // A provider stands for its kind: `jwt` covers every JWT provider.
  const kindOf = (entry: string): string | undefined =>
    config.jwtProviders.some((p) => p.name === entry)
      ? "jwt"
      : config.oauthProviders.some((p) => p.name === entry)
        ? "oauth"
        : undefined;
  const extra = composite.accept.find(
    (e) => !part.accept.includes(e) && !part.accept.includes(kindOf(e) ?? ""),
  );
  if (extra !== undefined) return `'${composite.name}' accepts ${extra}`;
  const need = part.requiredScopes ?? [];
  if (need.length > 0) {
    const have = composite.requiredScopes ?? [];
    // The scopes every caller let through holds: all of them, or the one when there is one.
    const sure = composite.scopesMode === "all" || have.length === 1 ? have : [];
    const covered =
      part.scopesMode === "all"
        ? need.every((s) => sure.includes(s))
        : sure.some((s) => need.includes(s)) || (have.length > 0 && have.every((s) => need.includes(s)));
    if (!covered)
      return `'${composite.name}' does not require ${part.scopesMode} of the scopes ${need.join(", ")}`;
  }
  if (part.consumers && !(composite.consumers ?? []).length)
    return `'${composite.name}' does not limit the consumers`;
  const outsider = composite.consumers?.find((c) => part.consumers && !part.consumers.includes(c));
  if (outsider !== undefined) return `'${composite.name}' lets consumer '${outsider}' in`;
  for (const [claim, values] of Object.entries(part.requiredClaims ?? {})) {
    const mine = composite.requiredClaims?.[claim];
    if (!mine || !mine.every((v) => values.includes(v)))
      return `'${composite.name}' does not require the claim ${claim} as it does`;
  }
  return undefined;
}

/** Whether a route may serve a part's call: it sends to the part's upstream, and its path may match the part's. */
function mayServe(route: Route, part: CompositePart): boolean {
  const upstreams =
    route.upstream !== undefined ? [route.upstream] : (route.upstreams ?? []).map((u) => u.name);
  if (!upstreams.includes(part.upstream)) return false;
  // A rewritten route's upstream sees other paths than it matches, and a regex is not compared here:
  // both are taken to serve the part, the side of caution.
  if (route.rewrite !== undefined || route.match.pathRegex !== undefined) return true;
  const path = part.path.split("?")[0]!;
  const param = path.indexOf("{");
  const literal = param < 0 ? path : path.slice(0, param);
  const { pathPrefix, path: exact } = route.match;
  if (pathPrefix !== undefined)
    return literal.startsWith(pathPrefix) || (param >= 0 && pathPrefix.startsWith(literal));
  if (exact !== undefined) return param < 0 ? exact === path : exact.startsWith(literal);
  return true;
}

/**
 * A composite route gives each caller it lets through every part, so it must be at least as strict
 * as every route of its gateway that would serve a part's call directly: an authPolicy that lets
 * no one in whom the part's route's would refuse, and the part's route's rateLimitPolicy.
 */
export function partPolicyProblems(config: Config): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const policies = new Map(config.authPolicies.map((p) => [p.name, p]));
  config.compositeRoutes.forEach((c, i) => {
    const mine = c.authPolicy !== undefined ? policies.get(c.authPolicy) : undefined;
    if (c.authPolicy !== undefined && mine === undefined) return; // the reference check reports it
    const routes = config.routes.filter((r) => r.gateway === c.gateway);
    c.parts.forEach((p) => {
      for (const r of routes.filter((route) => mayServe(route, p))) {
        const theirs = r.authPolicy !== undefined ? policies.get(r.authPolicy) : undefined;
        const why = theirs ? weakerAuth(config, mine, theirs) : undefined;
        if (why !== undefined) {
          problems.push({
            field: `compositeRoutes[${i}].authPolicy`,
            reason:
              `part '${p.key}' calls ${p.upstream} at ${p.path}, which route '${r.name}' serves with ` +
              `authPolicy '${r.authPolicy}', and ${why}; use '${r.authPolicy}' or a stricter policy`,
          });
        }
        if (r.rateLimitPolicy !== undefined && r.rateLimitPolicy !== c.rateLimitPolicy) {
          problems.push({
            field: `compositeRoutes[${i}].rateLimitPolicy`,
            reason:
              `part '${p.key}' calls ${p.upstream} at ${p.path}, which route '${r.name}' limits with ` +
              `rateLimitPolicy '${r.rateLimitPolicy}'; give this route the same one`,
          });
        }
      }
    });
  });
  return problems;
}

/**
 * The config with a parts token on every gateway that has an aggregator: the one given, else the
 * one the previous config had for the gateway, else a new one. Tokens therefore stay across writes
 * that leave them out (as a config read back from the API does), and every replica translates the
 * same stored token.
 */
export function withPartsTokens(
  config: Config,
  previous: Config | undefined,
  newToken: () => string,
): Config {
  if (!config.gateways.some((g) => g.aggregator && g.aggregator.partsToken === undefined)) return config;
  const before = new Map(previous?.gateways.map((g) => [g.name, g.aggregator?.partsToken]));
  return {
    ...config,
    gateways: config.gateways.map((g) =>
      g.aggregator && g.aggregator.partsToken === undefined
        ? { ...g, aggregator: { ...g.aggregator, partsToken: before.get(g.name) ?? newToken() } }
        : g,
    ),
  };
}
