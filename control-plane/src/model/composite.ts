import { compositeProblems } from "@portico/contract";
import { ALL_IDENTITY_HEADERS as IDENTITY_HEADERS } from "@portico/contract";
import type { FieldProblem } from "./errors.js";
import type { Config } from "./schema.js";
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
    if (rlp && rlp.limits.length > 0 && !g.rateLimit) {
      problems.push({
        field: `${at}.rateLimitPolicy`,
        reason: `gateway '${c.gateway}' has no rateLimit service to enforce it; set gateways.rateLimit`,
      });
    }
  });
  return problems;
}
