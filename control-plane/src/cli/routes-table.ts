// Loaded only by `portico get routes`: route ordering needs the contract package, which the
// other commands do without.
import { inMatchOrder, rankOf } from "../model/route-order.js";
import type { Route } from "../model/schema.js";

/** A route's match in a few words: `= /path`, `/prefix*`, `~ regex`, then its other conditions. */
function matchSummary(r: Route): string {
  const m = r.match;
  const path =
    m.path !== undefined
      ? `= ${m.path}`
      : m.pathPrefix !== undefined
        ? `${m.pathPrefix}*`
        : `~ ${m.pathRegex}`;
  const cond = (c: NonNullable<Route["match"]["headers"]>[number], sep: string) =>
    `${c.invert ? "!" : ""}${c.name}${
      c.exact !== undefined
        ? `${sep}${c.exact}`
        : c.prefix !== undefined
          ? `${sep}${c.prefix}*`
          : c.regex !== undefined
            ? `~${c.regex}`
            : c.present
              ? ""
              : " absent"
    }`;
  return [
    path,
    ...(m.methods ? [m.methods.join(",")] : []),
    ...(m.host ? [`host ${m.host}`] : []),
    ...(m.headers ?? []).map((h) => cond(h, ": ")),
    ...(m.query ?? []).map((q) => `?${cond(q, "=")}`),
    ...(r.listener ? [`listener ${r.listener}`] : []),
    ...(r.priority ? [`priority ${r.priority}`] : []),
  ].join("  ");
}

/**
 * Routes as Envoy tries them: per gateway, in match order (the host's own routes before those for
 * every host, then the model's order); ORDER counts within the gateway.
 */
export function routeTable(items: Route[]): string[][] {
  const gateways = [...new Set(items.map((r) => r.gateway))].sort();
  const rows = [["ORDER", "NAME", "GATEWAY", "MATCH", "UPSTREAM"]];
  for (const g of gateways) {
    const ordered = inMatchOrder(
      items.filter((r) => r.gateway === g),
      (r) => rankOf({ ...r, kind: "routes", index: 0, template: false, priority: r.priority ?? 0 }),
    );
    ordered.forEach((r, i) =>
      rows.push([
        String(i + 1),
        r.name,
        g,
        matchSummary(r),
        r.upstream ??
          r.upstreams?.map((w) => `${w.name}:${w.weight}`).join(",") ??
          (r.redirect ? "(redirect)" : "(direct)"),
      ]),
    );
  }
  return rows;
}
