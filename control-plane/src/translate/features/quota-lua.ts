/**
 * The quota deny as a Lua script for Envoy's `lua` filter, delivered by ECDS: a table of the
 * subjects denied per policy (model/usage-quota.ts names them) and of the routes whose policy has any,
 * and a check that answers 429 to a request whose subject is denied, with Retry-After until the
 * period ends. The error-answers mapper gives the answer Portico's JSON error shape, as it does to
 * the rate limiter's refusals. With nobody denied, the script defines no function, so the filter
 * does no work on any request.
 */
import { ANONYMOUS } from "../../model/ratelimit.js";
import { UNIT_SECONDS, type QuotaDeny, type UsageCounter } from "../../model/usage-quota.js";
import { luaString } from "./lua-string.js";
import type { RouteUsage } from "./quota.js";

/** What the answer's body says (Portico's error shape puts it in `detail`). */
export const QUOTA_EXHAUSTED = "quota_exhausted";

/** The script when no caller of the gateway is denied. */
export const NO_DENIES = "-- No caller of this gateway has used up a quota.\n";

const CHECK = String.raw`
local time, tostring, match, type = os.time, tostring, string.match, type
local function consumer(info, r)
  local v = info:dynamicMetadata():get(r[2])
  for i = 3, #r do
    if type(v) ~= "table" then return nil end
    v = v[r[i]]
  end
  if type(v) == "string" then return v end
  return nil
end
function envoy_on_request(handle)
  local info = handle:streamInfo()
  local r = routes[info:routeName()]
  if r == nil then return end
  local d = denied[r[1]]
  local c = consumer(info, r) or ANONYMOUS
  local a = info:downstreamRemoteAddress()
  a = match(a, "^%[(.*)%]:%d+$") or match(a, "^(.*):%d+$") or a
  local e
  if c ~= ANONYMOUS then e = d["c:" .. c] else e = d["a:" .. a] end
  local i = d["i:" .. a]
  if i ~= nil and (e == nil or i[1] > e[1]) then e = i end
  if e == nil then return end
  local left = e[1] - time()
  if left <= 0 then return end
  local answer = {
    [":status"] = "429",
    ["retry-after"] = tostring(left),
    ["x-envoy-ratelimited"] = "true",
  }
  if LIMIT_HEADERS then
    local limit = tostring(e[2])
    answer["x-ratelimit-limit"] = limit .. ", " .. limit .. ";w=" .. e[3]
    answer["x-ratelimit-remaining"] = "0"
    answer["x-ratelimit-reset"] = tostring(left)
  end
  -- A gRPC caller is told RESOURCE_EXHAUSTED, as the rate limiter's refusals tell it, not the
  -- UNAVAILABLE (retry at once) that Envoy makes of a 429.
  local h = handle:headers()
  local ct = h:get("content-type")
  if ct ~= nil and ct:sub(1, 16) == "application/grpc" and h:get("x-envoy-original-method") == nil then
    answer["grpc-status"] = "8"
  end
  handle:respond(answer, QUOTA_EXHAUSTED)
end
`;

/**
 * Whether a deny is for a quota the policy still has: once a quota is changed, the denies made for
 * the old one no longer apply (a subject still over the new one is denied again at its next count).
 */
function forCurrentQuota(d: QuotaDeny, counters: readonly UsageCounter[]): boolean {
  const kind = d.subject.startsWith("c:") ? "consumer" : d.subject.startsWith("a:") ? "anonymous" : "ip";
  return counters.some(
    (c) =>
      c.kind === kind &&
      c.unit === d.unit &&
      (c.requests === d.limit || [...c.plans.values()].includes(d.limit)),
  );
}

/**
 * The deny script for a gateway: its usage-counted routes and the denies in force. Each subject
 * keeps the deny that lifts last (a day's and a month's quota both used up: the month's). Its
 * refusals carry the `X-RateLimit-*` headers (the quota, 0, the seconds until the period ends)
 * unless `limitHeaders` is false.
 */
export function denyScript(
  routes: readonly RouteUsage[],
  denies: readonly QuotaDeny[],
  limitHeaders = true,
): string {
  const byPolicy = new Map<string, Map<string, QuotaDeny>>();
  const countersOf = new Map(routes.map((r) => [r.policy, r.counters]));
  for (const d of denies) {
    const counters = countersOf.get(d.policy);
    if (!counters || !forCurrentQuota(d, counters)) continue;
    let subjects = byPolicy.get(d.policy);
    if (!subjects) byPolicy.set(d.policy, (subjects = new Map()));
    const had = subjects.get(d.subject);
    if (!had || had.until < d.until) subjects.set(d.subject, d);
  }
  if (byPolicy.size === 0) return NO_DENIES;
  const routeRows = routes
    .filter((r) => byPolicy.has(r.policy))
    .map((r) => {
      const key = [r.consumerKey.key, ...r.consumerKey.path.map((p) => p.key)].map(luaString);
      return `[${luaString(r.route)}]={${[luaString(r.policy), ...key].join(",")}}`;
    });
  const policyRows = [...byPolicy.keys()].sort().map((p) => {
    const subjects = byPolicy.get(p)!;
    const rows = [...subjects.keys()].sort().map((s) => {
      const d = subjects.get(s)!;
      return `[${luaString(s)}]={${Math.ceil(d.until / 1000)},${d.limit},${UNIT_SECONDS[d.unit]}}`;
    });
    return `[${luaString(p)}]={${rows.join(",")}}`;
  });
  return (
    `local ANONYMOUS, QUOTA_EXHAUSTED = ${luaString(ANONYMOUS)}, ${luaString(QUOTA_EXHAUSTED)}\n` +
    `local LIMIT_HEADERS = ${limitHeaders}\n` +
    `local routes={${routeRows.join(",")}}\n` +
    `local denied={${policyRows.join(",")}}\n` +
    CHECK
  );
}
