// JWT routes Envoy verifies itself (extAuthz.jwt: auto): jwt_authn with the inline keys the control
// plane pins, its verified-token cache, then Portico's checks in Lua (the same refusals and identity
// as ext-authz), with no call out; beside the bare route of the same Envoy, and with a
// per-consumer per-second limit each Envoy counts (`enforce: envoy`, the default), set high enough
// never to refuse, so every request still takes a token from its consumer's bucket. Tokens are
// taken in turn by a wrk script: a few that stay in Envoy's cache (hit), or more than the cache
// holds (miss: every request verifies a signature). One Envoy (--concurrency 1), the control plane
// in this process, configured as a user would configure it; no ext-authz runs at all. Beside it,
// in the same rounds, a static Envoy written by hand shows what the least of each design costs on
// the limited route against its own bare route: jwt_authn and the same per-consumer limit with no
// Lua at all (the subject copied to a header by jwt_authn, then to metadata), and the same with a
// Lua filter that does nothing after jwt_authn. The gateway holds --consumers consumer records (none
// of them the bench's callers), as a gateway with customers does: the checks have every record at
// hand. Any answer other than 2xx, or any socket error, fails the run.
//   npx tsx bench/native-jwt.ts [--seconds 5] [--rounds 3] [--connections 32] [--consumers 1000]
//                               [--rate-limit-headers exact|always|off]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { REPO_ROOT } from "@portico/envoy";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type AdminHandle,
  type EnvoyProcess,
} from "@portico/testing";
import { ISSUER, jwk, token as signedToken } from "./lib/bench-jwt.js";
import { processCpuUs } from "./lib/proc.js";
import {
  appCluster,
  EMPTY_LUA,
  startStaticEnvoy,
  staticJwtAuthn,
  staticListener,
  type StaticEnvoy,
} from "./lib/static-envoy.js";
import { median } from "./lib/stats.js";
import { bearerScript, requireWrk, wrk as runWrk, type WrkResult } from "./lib/wrk.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    connections: { type: "string", default: "32" },
    consumers: { type: "string", default: "1000" },
    /** The gateway's `rateLimitHeaders`: `always` measures Envoy's own headers on every answer. */
    "rate-limit-headers": { type: "string", default: "exact" },
  },
});
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);
const CONSUMERS = Number(values.consumers);
/** Envoy's verified-token cache per provider (the translator's JWT_CACHE_SIZE). */
const JWT_CACHE_SIZE = 10_000;
const HIT_TOKENS = 10;
/** More tokens than the cache holds, in turn: each is gone by the time it comes back. */
const MISS_TOKENS = JWT_CACHE_SIZE + 2_000;

requireWrk();

/** The identity's namespace in dynamic metadata, where Portico's limits read the consumer. */
const IDENTITY_NAMESPACE = "envoy.filters.http.ext_authz";

/**
 * The static Envoy's floors, all on /limited: a bare route, jwt_authn then a per-consumer limit
 * as Envoy's users would write it (one token bucket per consumer, the subject jwt_authn put in a
 * header copied to metadata as Portico's identity filter copies it), and the same with an empty
 * Lua filter after jwt_authn.
 */
function floorsBootstrap(ports: { bare: number; native: number; lua: number }, upstreamPort: number): object {
  const jwtAuthn = staticJwtAuthn("/limited", JWT_CACHE_SIZE);
  const identity = {
    name: "envoy.filters.http.header_to_metadata",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
      request_rules: [
        {
          header: "x-portico-consumer",
          on_header_present: { metadata_namespace: IDENTITY_NAMESPACE, key: "consumer", type: "STRING" },
        },
      ],
    },
  };
  const always = { default_value: { numerator: 100, denominator: "HUNDRED" } };
  const limit = {
    name: "envoy.filters.http.local_ratelimit",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
      stat_prefix: "caller_limits",
      filter_enabled: always,
      filter_enforced: always,
      rate_limits: [
        {
          actions: [
            { generic_key: { descriptor_key: "limit", descriptor_value: "per-consumer" } },
            {
              metadata: {
                descriptor_key: "consumer",
                metadata_key: { key: IDENTITY_NAMESPACE, path: [{ key: "consumer" }] },
                default_value: "anonymous",
                source: "DYNAMIC",
              },
            },
          ],
        },
      ],
      descriptors: [
        {
          entries: [
            { key: "limit", value: "per-consumer" },
            { key: "consumer", value: "" },
          ],
          token_bucket: { max_tokens: 1_000_000, tokens_per_fill: { value: 1_000_000 }, fill_interval: "1s" },
        },
      ],
      max_dynamic_descriptors: { value: 10_000 },
    },
  };
  return {
    static_resources: {
      listeners: [
        staticListener("bare", ports.bare, ["/limited"], []),
        staticListener("native", ports.native, ["/limited"], [jwtAuthn, identity, limit]),
        staticListener("lua", ports.lua, ["/limited"], [jwtAuthn, EMPTY_LUA, identity, limit]),
      ],
      clusters: [appCluster(upstreamPort)],
    },
  };
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-native-jwt-"));
/** The bench's tokens carry the scope its routes require. */
const token = (i: number) => signedToken(i, { scope: "read" });
const tokenScript = (name: string, tokens: string[], start = 0) => bearerScript(dir, name, tokens, start);
const wrk = (url: string, script: string) =>
  runWrk(url, script, { connections: CONNECTIONS, seconds: SECONDS });

let api: AdminHandle | undefined;
let envoy: EnvoyProcess | undefined;
let floors: StaticEnvoy | undefined;
const upstream = await startHttpUpstream("app");
try {
  api = await startAdmin();
  const port = await freePort();
  const put = async (p: string, body: object) => {
    const res = await api!.call("PUT", `/api/v1/${p}`, { body });
    if (res.status >= 300) throw new Error(`PUT ${p}: ${res.status} ${res.text}`);
  };
  await put("upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] });
  // Named by the gateway, never called: every route here is verified by Envoy.
  await put("upstreams/ext-authz", {
    name: "ext-authz",
    protocol: "grpc",
    endpoints: [{ host: "127.0.0.1", port: await freePort() }],
  });
  await put("jwtProviders/idp", {
    name: "idp",
    issuer: ISSUER,
    audiences: ["bench"],
    jwks: { keys: [jwk] },
    algorithms: ["RS256"],
  });
  await put("authPolicies/users", { name: "users", accept: ["idp"] });
  await put("rateLimitPolicies/per-consumer", {
    name: "per-consumer",
    limits: [{ requests: 1_000_000, per: "second", by: "consumer" }],
  });
  await put("gateways/edge", {
    name: "edge",
    listeners: [{ name: "http", port, address: "127.0.0.1" }],
    extAuthz: { upstream: "ext-authz" },
    rateLimitHeaders: values["rate-limit-headers"],
  });
  for (const [name, extra] of [
    ["bare", {}],
    ["jwt", { authPolicy: "users" }],
    ["limited", { authPolicy: "users", rateLimitPolicy: "per-consumer" }],
  ] as const)
    await put(`routes/${name}`, {
      name,
      gateway: "edge",
      match: { path: `/${name}` },
      upstream: "app",
      ...extra,
    });
  if (CONSUMERS > 0) {
    // In one write, as an operator would import them.
    const res = await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } });
    const consumers = Array.from({ length: CONSUMERS }, (_, i) => ({ name: `member-${i}`, plan: "gold" }));
    const written = await api.call("PUT", "/api/v1/config", { body: { ...res.json, consumers } });
    if (written.status >= 300) throw new Error(`PUT config: ${written.status} ${written.text}`);
  }
  const status = (await api.call("GET", "/api/v1/status")).json as {
    routes: { route: string; auth: string }[];
  };
  for (const r of status.routes.filter((x) => x.route !== "bare"))
    if (r.auth !== "native")
      throw new Error(`route ${r.route} is not verified by Envoy: ${JSON.stringify(r)}`);

  envoy = await startEnvoy({
    nodeId: "bench-native-jwt",
    group: "edge",
    xdsPort: api.cp.xdsPort,
    logLevel: "warn",
    componentLogLevel: "upstream:warn",
  });
  await envoy.waitReady({ timeoutMs: 30_000 });
  const floorPorts = { bare: await freePort(), native: await freePort(), lua: await freePort() };
  floors = await startStaticEnvoy(dir, "floors", floorsBootstrap(floorPorts, upstream.port));

  console.log(`signing ${HIT_TOKENS + MISS_TOKENS} tokens…`);
  const hitScript = tokenScript(
    "hit",
    Array.from({ length: HIT_TOKENS }, (_, i) => token(i)),
  );
  const missTokens = Array.from({ length: MISS_TOKENS }, (_, i) => token(HIT_TOKENS + i));
  let missSent = 0;
  const missScript = () => tokenScript("miss", missTokens, missSent);
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  const auth = { authorization: `Bearer ${token(0)}` };
  const floorUrl = (port: number) => `http://127.0.0.1:${port}/limited`;
  for (const u of [url("/jwt"), url("/limited"), floorUrl(floorPorts.native), floorUrl(floorPorts.lua)]) {
    await waitFor(async () => (await httpRequest(u, { headers: auth })).status === 200, {
      timeoutMs: 30_000,
      what: `${u} admitting a valid token`,
    });
    const refused = await httpRequest(u);
    if (refused.status !== 401) throw new Error(`${u} let an unauthenticated request through`);
  }

  const hit = () => hitScript;
  const scenarios: {
    key: string;
    label: string;
    url: string;
    script: () => string;
    /** Which Envoy serves it: Portico's, or the static one of the floors. */
    on: "portico" | "static";
    /** The scenario its ratios are against. */
    baseline: string;
  }[] = [
    {
      key: "bare",
      label: "bare route (no auth)",
      url: url("/bare"),
      script: hit,
      on: "portico",
      baseline: "bare",
    },
    {
      key: "native-hit",
      label: "native JWT, cache hit",
      url: url("/jwt"),
      script: hit,
      on: "portico",
      baseline: "bare",
    },
    {
      key: "native-miss",
      label: "native JWT, cache miss",
      url: url("/jwt"),
      script: missScript,
      on: "portico",
      baseline: "bare",
    },
    {
      key: "limited-hit",
      label: "native JWT + consumer limit, hit",
      url: url("/limited"),
      script: hit,
      on: "portico",
      baseline: "bare",
    },
    {
      key: "limited-miss",
      label: "native JWT + consumer limit, miss",
      url: url("/limited"),
      script: missScript,
      on: "portico",
      baseline: "bare",
    },
    {
      key: "static-bare",
      label: "static Envoy, bare route",
      url: floorUrl(floorPorts.bare),
      script: hit,
      on: "static",
      baseline: "static-bare",
    },
    {
      key: "static-limit",
      label: "static: jwt_authn + consumer limit, no Lua, hit",
      url: floorUrl(floorPorts.native),
      script: hit,
      on: "static",
      baseline: "static-bare",
    },
    {
      key: "static-lua-limit",
      label: "static: jwt_authn + empty Lua + consumer limit, hit",
      url: floorUrl(floorPorts.lua),
      script: hit,
      on: "static",
      baseline: "static-bare",
    },
  ];
  const invalid: string[] = [];
  const run = async (label: string, u: string, script: () => string) => {
    const file = script();
    const r = await wrk(u, file);
    if (file !== hitScript) missSent += r.requests;
    if (r.non2xx > 0 || r.socketErrors > 0)
      invalid.push(`${label}: ${r.non2xx} non-2xx answers, ${r.socketErrors} socket errors in ${r.requests}`);
    return r;
  };
  // Warm-up: connections, the hit tokens into the cache, the Lua states.
  for (const s of scenarios) await run(`warm-up ${s.label}`, s.url, s.script);
  const results = new Map<string, WrkResult[]>(scenarios.map((s) => [s.key, []]));
  const cache = new Map(scenarios.map((s) => [s.key, { hits: 0, misses: 0 }]));
  /** Envoy's CPU (user + system) per request, µs: what each path costs the proxy, whatever else shares the cores. */
  const cpu = new Map<string, number[]>(scenarios.map((s) => [s.key, []]));
  const counter = async (on: "portico" | "static", suffix: string) => {
    if (on === "static") return floors!.counter(suffix);
    let total = 0;
    for (const [name, v] of await envoy!.stats()) if (name.endsWith(suffix)) total += v;
    return total;
  };
  const pidOf = (on: "portico" | "static") => (on === "static" ? floors!.pid : envoy!.pid);
  // Interleaved rounds, so drift in a noisy machine hits every scenario alike.
  for (let round = 0; round < ROUNDS; round++) {
    for (const s of scenarios) {
      const [h0, m0] = [await counter(s.on, "jwt_cache_hit"), await counter(s.on, "jwt_cache_miss")];
      const cpu0 = processCpuUs(pidOf(s.on));
      const r = await run(s.label, s.url, s.script);
      cpu.get(s.key)!.push((processCpuUs(pidOf(s.on)) - cpu0) / r.requests);
      results.get(s.key)!.push(r);
      const c = cache.get(s.key)!;
      c.hits += (await counter(s.on, "jwt_cache_hit")) - h0;
      c.misses += (await counter(s.on, "jwt_cache_miss")) - m0;
    }
  }
  const summary = scenarios.map((s) => {
    const rs = results.get(s.key)!;
    const c = cache.get(s.key)!;
    return {
      key: s.key,
      scenario: s.label,
      baseline: s.baseline,
      rps: median(rs.map((r) => r.rps)),
      p50Ms: median(rs.map((r) => r.p50)),
      p99Ms: median(rs.map((r) => r.p99)),
      rounds: rs.map((r) => Math.round(r.rps)),
      envoyCpuUsPerRequest: median(cpu.get(s.key)!),
      jwtCache: { ...c, hitRatio: c.hits / Math.max(1, c.hits + c.misses) },
    };
  });
  const byKey = new Map(summary.map((r) => [r.key, r]));
  const baseOf = (r: (typeof summary)[number]) => byKey.get(r.baseline)!;
  console.log(
    `\nnative JWT through Envoy: wrk -t1 -c${CONNECTIONS} -d${SECONDS}s, ${ROUNDS} interleaved rounds, medians; ` +
      `Envoy --concurrency 1 on ${os.cpus().length} CPUs; ${HIT_TOKENS} tokens (hit) or ${MISS_TOKENS} (miss) in turn, cache ${JWT_CACHE_SIZE}; ` +
      `${CONSUMERS} consumer records; rateLimitHeaders ${values["rate-limit-headers"]}; ` +
      `each against the bare route of its own Envoy\n`,
  );
  console.log(
    `${"scenario".padEnd(52)} req/s    p50 ms   p99 ms  cache hits  vs bare (req/s, p99)  Envoy CPU µs/req (vs bare)`,
  );
  for (const r of summary) {
    const base = baseOf(r);
    const hits = r === base ? "" : `${(r.jwtCache.hitRatio * 100).toFixed(0)}%`;
    const ratios = `${(r.rps / base.rps).toFixed(2)}x, ${(r.p99Ms / base.p99Ms).toFixed(2)}x`;
    const cpuCell = `${r.envoyCpuUsPerRequest.toFixed(0)} (${(r.envoyCpuUsPerRequest / base.envoyCpuUsPerRequest).toFixed(2)}x)`;
    console.log(
      `${r.scenario.padEnd(52)} ${r.rps.toFixed(0).padStart(6)}   ${r.p50Ms.toFixed(2).padStart(6)}   ${r.p99Ms.toFixed(2).padStart(6)}  ${hits.padStart(10)}  ${ratios.padEnd(20)}  ${cpuCell}`,
    );
  }
  fs.mkdirSync(path.join(REPO_ROOT, "bench/results"), { recursive: true });
  fs.writeFileSync(
    path.join(REPO_ROOT, "bench/results/native-jwt.json"),
    JSON.stringify(
      {
        tool: "wrk",
        seconds: SECONDS,
        rounds: ROUNDS,
        connections: CONNECTIONS,
        cpus: os.cpus().length,
        jwtCacheSize: JWT_CACHE_SIZE,
        consumers: CONSUMERS,
        tokens: { hit: HIT_TOKENS, miss: MISS_TOKENS },
        invalid,
        results: summary.map((r) => ({
          ...r,
          vsBare: { rps: r.rps / baseOf(r).rps, p99: r.p99Ms / baseOf(r).p99Ms },
        })),
      },
      null,
      2,
    ),
  );
  if (invalid.length > 0) {
    console.error(`\nanswers other than 2xx; these figures are not valid:\n  ${invalid.join("\n  ")}`);
    process.exitCode = 1;
  }
} finally {
  await envoy?.stop().catch(() => undefined);
  await floors?.stop().catch(() => undefined);
  await api?.stop().catch(() => undefined);
  await upstream.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
