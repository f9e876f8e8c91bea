// xDS benchmark: how fast a config change reaches a real Envoy, how a change fans out to a
// simulated fleet, what a cold push of a large config costs, delta vs SotW bytes, and the control
// plane's memory with a large fleet. Prints figures; never fails on a time.
//
//   npx tsx bench/xds.ts [--quick | --long] [--sections 1,2,3,4,5] [--cp-root DIR] [--out FILE]
//
// `--quick`: 20 changes, 100 clients, well under a minute. `--long` adds the memory run with
// delta clients and the 1,000-client run on one shared connection.
// `--cp-root` runs the control plane from another checkout (same layout), e.g. a `git archive`
// of a known-good commit while the working tree is mid-change.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { XdsClient, type ClientUpdate } from "../common/src/xds-client.js";
import { buildSnapshots } from "../control-plane/src/config/publish.js";
import type { ConfigInput } from "../control-plane/src/model/schema.js";
import { parseYamlText, validateConfig } from "../control-plane/src/model/validate.js";
import { TypeUrl } from "../control-plane/src/xds/types.js";
import { findEnvoy } from "../envoy/src/find-envoy.js";
// The harness modules one by one: its index also pulls in the in-process control plane, which
// the bench does not need and which may not load while control-plane/ is being edited.
import { startEnvoy, type EnvoyProcess } from "../test/harness/envoy.js";
import { freePort, freePorts } from "../test/harness/ports.js";
import { startHttpUpstream, type HttpUpstream } from "../test/harness/upstream.js";
import { waitFor } from "../test/harness/wait.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const GC_ON_SIGNAL =
  "data:text/javascript,process.on('SIGUSR2',()=>{globalThis.gc();globalThis.gc();process.stdout.write('bench-gc-done\\n')})";

const { values: argv } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    long: { type: "boolean", default: false },
    sections: { type: "string", default: "1,2,3,4,5" },
    "cp-root": { type: "string", default: REPO },
    out: { type: "string", default: path.join(REPO, "bench", "results", "xds.json") },
  },
});
const QUICK = argv.quick;
/** Adds the runs that are informative but push the total past five minutes. */
const LONG = argv.long && !QUICK;
const SECTIONS = new Set(argv.sections.split(",").map((s) => Number(s.trim())));
const CP_ROOT = path.resolve(argv["cp-root"]);
const CP_MAIN = path.join(CP_ROOT, "control-plane", "src", "main.ts");

const P = {
  changes: QUICK ? 20 : 100,
  warmupChanges: 3,
  baselineRequests: QUICK ? 200 : 1000,
  s1Protocols: ["sotw", "delta"] as const,
  fleetSizes: QUICK ? [100] : [100, 1000],
  fleetProtocols: ["delta", "sotw"] as const,
  fleetReps: (clients: number) => (QUICK || clients >= 1000 ? 3 : 5),
  fleetRoutes: 100,
  fleetUpstreams: 20,
  bigRoutes: 10_000,
  bigUpstreams: 2_000,
  buildRuns: QUICK ? 1 : 3,
  coldRuns: QUICK ? 1 : 3,
  rssClients: QUICK ? 100 : 1000,
  connectBatch: 100,
};

// ---------------------------------------------------------------------------------------------
// Small utilities

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

function percentile(values: number[], p: number): number {
  const xs = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (xs.length === 0) return NaN;
  const rank = Math.min(xs.length, Math.max(1, Math.ceil((p / 100) * xs.length)));
  return xs[rank - 1]!;
}
const median = (xs: number[]) => percentile(xs, 50);

function ms(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  return v < 10 ? `${v.toFixed(2)} ms` : v < 1000 ? `${v.toFixed(1)} ms` : `${(v / 1000).toFixed(2)} s`;
}
function bytes(v: number): string {
  if (!Number.isFinite(v)) return "n/a";
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  return `${(v / 1024 / 1024).toFixed(2)} MiB`;
}
const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
const round = (v: number, d = 2) => (Number.isFinite(v) ? Number(v.toFixed(d)) : null);

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

function procStatus(pid: number): { rssKiB: number; hwmKiB: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rssKiB: field("VmRSS"), hwmKiB: field("VmHWM") };
}

/** Established client-side TCP connections to a local port, from the kernel's table. */
function connectionsTo(port: number): number {
  let n = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const remPort = parseInt(cols[2]!.split(":")[1] ?? "", 16);
      if (remPort === port && cols[3] === "01") n++;
    }
  }
  return n;
}

/** GET over a keep-alive agent; `at` is when the response head arrived. */
function get(url: string, agent: http.Agent, timeoutMs = 2000): Promise<{ status: number; at: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      const at = now();
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, at }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
  });
}

// ---------------------------------------------------------------------------------------------
// Process bookkeeping: everything started is stopped on the way out, error or not.

const cleanups: (() => Promise<void> | void)[] = [];
const liveChildren = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of liveChildren) c.kill("SIGKILL");
});

async function runCleanups(): Promise<void> {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`cleanup: ${(err as Error).message}\n`);
    }
  }
}

// `on`, not `once`: the Envoy harness re-raises the signal when no other listener is left, which
// would end this process before the control plane child is stopped. A second signal forces it.
let stopping = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stderr.write(`\n${sig}: stopping everything started\n`);
    void runCleanups().finally(() => process.exit(130));
  });
}

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "portico-bench-xds-"));
cleanups.push(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------------
// The control plane as a child process, so its RSS is its own.

class ControlPlaneProcess {
  private ring: string[] = [];
  private gcCount = 0;
  private exited = false;

  private constructor(
    readonly child: ChildProcess,
    readonly dir: string,
    readonly file: string,
    readonly xdsPort: number,
    readonly adminPort: number,
  ) {
    const keep = (chunk: Buffer) => {
      const lines = chunk
        .toString("utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l));
      this.gcCount += lines.filter((l) => l === "bench-gc-done").length;
      this.ring.push(...lines.filter((l) => l !== "bench-gc-done"));
      if (this.ring.length > 200) this.ring.splice(0, this.ring.length - 200);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.once("exit", () => {
      this.exited = true;
      liveChildren.delete(child);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }
  get target(): string {
    return `127.0.0.1:${this.xdsPort}`;
  }

  static async start(
    name: string,
    configText: string,
  ): Promise<{ cp: ControlPlaneProcess; readyMs: number }> {
    const dir = fs.mkdtempSync(path.join(tmpRoot, `${name}-`));
    const file = path.join(dir, "portico.yaml");
    writeAtomic(file, configText);
    const [xdsPort, adminPort] = await freePorts(2);
    const t0 = now();
    const child = spawn(
      process.execPath,
      [
        // Memory readings are taken after a full collection, or a reading right after start-up
        // (parse garbage not yet collected) could exceed one taken with a fleet connected. The
        // hook only answers a signal; the control plane's code is untouched.
        "--expose-gc",
        "--import",
        GC_ON_SIGNAL,
        "--import",
        import.meta.resolve("tsx"),
        CP_MAIN,
        "--config",
        file,
        "--xds-host",
        "127.0.0.1",
        "--xds-port",
        String(xdsPort),
        "--admin-host",
        "127.0.0.1",
        "--admin-port",
        String(adminPort),
        "--debounce-ms",
        "0",
      ],
      {
        // The working directory is a temp dir so that nothing the control plane writes by default
        // (store, tokens) lands in the checkout; the variables cover versions that read them and
        // are ignored by those that do not.
        cwd: dir,
        env: {
          ...process.env,
          LOG_LEVEL: "warn",
          PORTICO_WATCH_CONFIG: "true",
          PORTICO_STORE: `file:${path.join(dir, "store")}`,
          PORTICO_TOKENS_FILE: path.join(dir, "tokens.json"),
          TSX_TSCONFIG_PATH: path.join(CP_ROOT, "tsconfig.json"),
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    liveChildren.add(child);
    const cp = new ControlPlaneProcess(child, dir, file, xdsPort, adminPort);
    cleanups.push(() => cp.stop());
    let state: "ready" | "exited";
    try {
      state = await waitFor(
        async () => {
          if (cp.exited) return "exited" as const;
          const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
          await res.arrayBuffer();
          return res.status === 200 && ("ready" as const);
        },
        { what: `control plane ${name} /readyz`, timeoutMs: 120_000, intervalMs: 20 },
      );
    } catch (err) {
      throw new Error(`control plane did not become ready: ${(err as Error).message}\n${cp.logs()}`);
    }
    if (state === "exited") throw new Error(`control plane exited before it was ready:\n${cp.logs()}`);
    return { cp, readyMs: now() - t0 };
  }

  logs(): string {
    return this.ring.slice(-40).join("\n");
  }

  status(): { rssKiB: number; hwmKiB: number } {
    return procStatus(this.pid);
  }

  /** Median of a few readings, a moment apart. */
  /** Full GC in the child; resolves once it reports back. */
  async gc(): Promise<void> {
    const before = this.gcCount;
    this.child.kill("SIGUSR2");
    await waitFor(() => this.gcCount > before, {
      what: "GC in the control plane",
      timeoutMs: 30_000,
      intervalMs: 10,
    });
    await sleep(200);
  }

  /** RSS after a full GC: the median of a few readings a moment apart. */
  async rss(samples = 5): Promise<number> {
    await this.gc();
    const xs: number[] = [];
    for (let i = 0; i < samples; i++) {
      xs.push(this.status().rssKiB);
      await sleep(100);
    }
    return median(xs);
  }

  /** V8 heap and off-heap memory as the process reports them in /metrics (prom-client defaults). */
  async heap(): Promise<{ usedMiB: number; totalMiB: number; externalMiB: number }> {
    const text = await this.metrics();
    const get = (name: string) =>
      Number(new RegExp(`^${name}\\s+(\\S+)`, "m").exec(text)?.[1] ?? NaN) / 1024 / 1024;
    return {
      usedMiB: get("nodejs_heap_size_used_bytes"),
      totalMiB: get("nodejs_heap_size_total_bytes"),
      externalMiB: get("nodejs_external_memory_bytes"),
    };
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.adminPort}/metrics`);
    return res.text();
  }

  /** Sum of a metric's samples whose labels include all of `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const text = await this.metrics();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (!line.startsWith(name)) continue;
      const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m || m[1] !== name) continue;
      const l = m[2] ?? "";
      if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3]);
    }
    return sum;
  }

  write(config: ConfigInput | string): void {
    writeAtomic(this.file, typeof config === "string" ? config : JSON.stringify(config));
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(timer);
  }
}

async function envoy(nodeId: string, group: string, xdsPort: number, protocol: "sotw" | "delta") {
  const e = await startEnvoy({
    nodeId,
    group,
    xdsPort,
    protocol,
    logLevel: "warn",
    componentLogLevel: "upstream:warn,config:warn",
  });
  const stop = async () => {
    await e.stop();
    fs.rmSync(e.dir, { recursive: true, force: true });
  };
  cleanups.push(stop);
  return { e, stop };
}

// ---------------------------------------------------------------------------------------------
// Simulated fleet

// XdsClient gives every client its own grpc.Client, but grpc-js pools subchannels process-wide by
// target and options, so by default all clients multiplex onto one HTTP/2 connection. A real
// fleet is one connection per node; XdsClient offers no way to set grpc.use_local_subchannel_pool,
// so the pool lookup is switched here while clients are created.
const requireCjs = createRequire(import.meta.url);
const subchannelPool = requireCjs("@grpc/grpc-js/build/src/subchannel-pool.js") as {
  getSubchannelPool: (global: boolean) => unknown;
};
const globalPoolLookup = subchannelPool.getSubchannelPool;
function useSharedConnection(shared: boolean): void {
  subchannelPool.getSubchannelPool = shared ? globalPoolLookup : () => globalPoolLookup(false);
}

const FOUR_TYPES = [TypeUrl.Cluster, TypeUrl.Endpoint, TypeUrl.Listener, TypeUrl.Route];
type UpdateListener = (i: number, u: ClientUpdate, at: number) => void;
let fleetCounter = 0;

class Fleet {
  readonly clients: XdsClient[] = [];
  readonly versions: Map<string, string>[] = [];
  private readonly seen: Set<string>[] = [];
  private readonly listeners = new Set<UpdateListener>();
  private readonly id = ++fleetCounter;
  errors = 0;
  firstError?: string;
  /** Bytes of every update received, all clients. */
  totalBytes = 0;

  constructor(
    readonly target: string,
    readonly group: string,
    readonly protocol: "sotw" | "delta",
    /** SotW asks for EDS and RDS by name, as Envoy does (an empty list there means none). */
    readonly names: { eds: string[]; rds: string[] },
    readonly shared: boolean,
  ) {}

  get size(): number {
    return this.clients.length;
  }

  onUpdate(fn: UpdateListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private add(): number {
    const i = this.clients.length;
    useSharedConnection(this.shared);
    const client = new XdsClient({
      target: this.target,
      node: { id: `${this.group}-${this.protocol}-${this.id}-${i}`, cluster: this.group },
      protocol: this.protocol,
      decode: false,
    });
    useSharedConnection(true);
    const versions = new Map<string, string>();
    const seen = new Set<string>();
    this.clients.push(client);
    this.versions.push(versions);
    this.seen.push(seen);
    client.on("error", (err) => {
      this.errors++;
      this.firstError ??= err.message;
    });
    client.on("update", (u) => {
      const at = now();
      this.totalBytes += u.bytes;
      versions.set(u.typeUrl, u.version);
      seen.add(u.typeUrl);
      for (const l of this.listeners) l(i, u, at);
    });
    for (const t of FOUR_TYPES) {
      const names =
        this.protocol === "delta"
          ? []
          : t === TypeUrl.Endpoint
            ? this.names.eds
            : t === TypeUrl.Route
              ? this.names.rds
              : [];
      client.subscribe(t, names);
    }
    return i;
  }

  synced(i: number): boolean {
    return this.seen[i]!.size === FOUR_TYPES.length;
  }

  /** Adds clients in batches (a burst of connects would overflow the listen backlog), each synced. */
  async grow(count: number, batch = P.connectBatch, timeoutMs = 120_000): Promise<number> {
    const t0 = now();
    while (this.clients.length < count) {
      const from = this.clients.length;
      const to = Math.min(count, from + batch);
      for (let k = from; k < to; k++) this.add();
      await waitFor(
        () => {
          for (let k = from; k < to; k++) if (!this.synced(k)) return false;
          return true;
        },
        {
          what: `clients ${from}..${to - 1} of ${this.protocol} fleet to sync (errors: ${this.errors}, ${this.firstError ?? "-"})`,
          timeoutMs,
          intervalMs: 5,
        },
      );
    }
    return now() - t0;
  }

  /** Resolves when every client has received (and ACKed) a new version of `typeUrl` after `t0`. */
  waitAllNew(typeUrl: string, timeoutMs = 60_000) {
    const before = this.versions.map((v) => v.get(typeUrl));
    const arrivals = new Array<number>(this.size).fill(NaN);
    let bytesAfter = 0;
    let remaining = this.size;
    let t0 = NaN;
    let off = () => {};
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${remaining} of ${this.size} clients never got the new ${typeUrl}`)),
        timeoutMs,
      );
      off = this.onUpdate((i, u, at) => {
        bytesAfter += u.bytes;
        if (u.typeUrl !== typeUrl || !Number.isNaN(arrivals[i]!) || u.version === before[i]) return;
        arrivals[i] = at - t0;
        if (--remaining === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    return {
      start: (t: number) => {
        t0 = t;
      },
      done: done.finally(() => off()),
      arrivals,
      bytes: () => bytesAfter,
    };
  }

  close(): void {
    for (const c of this.clients) c.close();
  }
}

async function waitNoNodes(cp: ControlPlaneProcess): Promise<void> {
  await waitFor(async () => (await cp.metric("portico_xds_connected_nodes")) === 0, {
    what: "control plane to forget every node",
    timeoutMs: 30_000,
    intervalMs: 100,
  });
}

// ---------------------------------------------------------------------------------------------
// Configs

function s1Config(listenPort: number, upstreamPort: number, probe: number | undefined): ConfigInput {
  const upstreams = Array.from({ length: 5 }, (_, k) => ({
    name: k === 0 ? "probe" : `svc-${k}`,
    endpoints: [{ host: "127.0.0.1", port: upstreamPort }],
  }));
  const routes: NonNullable<ConfigInput["routes"]> = [
    { name: "base", gateway: "bench", match: { path: "/base" }, upstream: "probe" },
  ];
  for (let k = 1; k < 10; k++)
    routes.push({
      name: `svc-${k}`,
      gateway: "bench",
      match: { pathPrefix: `/svc-${k}/` },
      upstream: `svc-${(k % 4) + 1}`,
    });
  // Exact path: a prefix /probe-1 would also answer /probe-12 and end the wait early.
  if (probe !== undefined)
    routes.push({
      name: `probe-${probe}`,
      gateway: "bench",
      match: { path: `/probe-${probe}` },
      upstream: "probe",
    });
  return {
    gateways: [{ name: "bench", listeners: [{ name: "http", port: listenPort, address: "127.0.0.1" }] }],
    upstreams,
    routes,
  };
}

function fleetConfig(edsPort: number, routeTag: number): ConfigInput {
  const upstreams = Array.from({ length: P.fleetUpstreams }, (_, k) => ({
    name: `up-${k}`,
    endpoints: [{ host: "127.0.0.1", port: k === 0 ? edsPort : 20_000 + k }],
  }));
  const routes = Array.from({ length: P.fleetRoutes }, (_, i) => ({
    name: `r-${i}`,
    gateway: "fleet",
    match: { pathPrefix: i === 0 ? `/r-0-v${routeTag}/` : `/r-${i}/` },
    upstream: `up-${i % P.fleetUpstreams}`,
  }));
  return {
    gateways: [{ name: "fleet", listeners: [{ name: "http", port: 10_080, address: "127.0.0.1" }] }],
    upstreams,
    routes,
  };
}

const upName = (k: number) => `up-${String(k).padStart(4, "0")}`;

function bigConfig(o: {
  bigPort: number;
  onePort: number;
  upstreamPort: number;
  routeTag: number;
  endpointTag: number;
}): ConfigInput {
  const upstreams = Array.from({ length: P.bigUpstreams }, (_, k) => ({
    name: upName(k),
    // up-0007 carries the one-endpoint change; its port is never used for traffic.
    endpoints: [{ host: "127.0.0.1", port: k === 7 ? 30_000 + o.endpointTag : o.upstreamPort }],
  }));
  const routes = Array.from({ length: P.bigRoutes }, (_, i) => ({
    name: `r-${String(i).padStart(5, "0")}`,
    gateway: "big",
    match: { pathPrefix: i === 5000 ? `/svc-5000-v${o.routeTag}/` : `/svc-${i}/` },
    upstream: upName(i % P.bigUpstreams),
  }));
  routes.push({ name: "one", gateway: "one", match: { pathPrefix: "/one" }, upstream: upName(0) });
  return {
    gateways: [
      { name: "big", listeners: [{ name: "http", port: o.bigPort, address: "127.0.0.1" }] },
      { name: "one", listeners: [{ name: "http", port: o.onePort, address: "127.0.0.1" }] },
    ],
    upstreams,
    routes,
  };
}

// ---------------------------------------------------------------------------------------------
// Results

type Row = [section: string, metric: string, value: string, aim?: string];
const rows: Row[] = [];
const results: Record<string, unknown> = {};
const notes: string[] = [];
const sectionSeconds: Record<string, number | null> = {};

function row(section: string, metric: string, value: string, aim?: string): void {
  rows.push([section, metric, value, aim]);
  console.log(`  ${section.padEnd(4)} ${metric.padEnd(72)} ${value}${aim ? `   (aim ${aim})` : ""}`);
}

// ---------------------------------------------------------------------------------------------
// 1. Change → served by a real Envoy

async function section1(): Promise<void> {
  console.log("\n[1] config change → first 200 through a real Envoy");
  const upstream: HttpUpstream = await startHttpUpstream("probe");
  cleanups.push(() => upstream.close());
  const listenPort = await freePort();
  const { cp } = await ControlPlaneProcess.start(
    "s1",
    JSON.stringify(s1Config(listenPort, upstream.port, undefined)),
  );
  const base = `http://127.0.0.1:${listenPort}`;
  const out: Record<string, unknown> = { changes: P.changes, warmup: P.warmupChanges };
  let seq = 0;

  for (const protocol of P.s1Protocols) {
    const { e, stop } = await envoy(`bench-${protocol}`, "bench", cp.xdsPort, protocol);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const observer = new XdsClient({
      target: cp.target,
      node: { id: `observer-${protocol}`, cluster: "bench" },
      protocol: "delta",
      decode: false,
    });
    observer.on("error", () => {});
    let lastRoutePush = 0;
    observer.on("update", (u) => {
      if (u.typeUrl === TypeUrl.Route) lastRoutePush = now();
    });
    observer.subscribe(TypeUrl.Route);
    try {
      await e.waitReady({ timeoutMs: 30_000, intervalMs: 20 });
      await waitFor(async () => (await get(`${base}/base`, agent)).status === 200, {
        what: "GET /base through Envoy",
        timeoutMs: 10_000,
        intervalMs: 20,
      });
      await waitFor(() => lastRoutePush > 0, { what: "observer RDS", timeoutMs: 10_000, intervalMs: 10 });

      const floor: number[] = [];
      for (let k = 0; k < 50 + P.baselineRequests; k++) {
        const t = now();
        const r = await get(`${base}/base`, agent);
        if (k >= 50 && r.status === 200) floor.push(r.at - t);
      }

      const served: number[] = [];
      const pushed: number[] = [];
      let polls = 0;
      let failures = 0;
      for (let k = 0; k < P.warmupChanges + P.changes; k++) {
        const i = ++seq;
        const text = JSON.stringify(s1Config(listenPort, upstream.port, i));
        const url = `${base}/probe-${i}`;
        const t0 = now();
        cp.write(text);
        let at = NaN;
        const deadline = t0 + 10_000;
        for (;;) {
          polls++;
          const r = await get(url, agent).catch(() => undefined);
          if (r?.status === 200) {
            at = r.at;
            break;
          }
          if (now() > deadline) break;
          await sleep(1);
        }
        if (Number.isNaN(at)) failures++;
        if (lastRoutePush <= t0) await sleep(200);
        if (k >= P.warmupChanges) {
          served.push(at - t0);
          pushed.push(lastRoutePush > t0 ? lastRoutePush - t0 : NaN);
        }
        await sleep(20);
      }
      const r = {
        floorP50: percentile(floor, 50),
        floorP99: percentile(floor, 99),
        servedP50: percentile(served, 50),
        servedP90: percentile(served, 90),
        servedP99: percentile(served, 99),
        servedMax: percentile(served, 100),
        pushP50: percentile(pushed, 50),
        pushP99: percentile(pushed, 99),
        failures,
        pollsPerChange: polls / (P.warmupChanges + P.changes),
      };
      out[protocol] = { ...r, servedMs: served.map((v) => round(v)) };
      const tag = protocol === "sotw" ? "SotW" : "delta";
      row(
        "1",
        `${tag} Envoy: plain request through Envoy (floor) p50 / p99`,
        `${ms(r.floorP50)} / ${ms(r.floorP99)}`,
      );
      row("1", `${tag} Envoy: file write → first 200 on /probe-<i>, p50`, ms(r.servedP50));
      row(
        "1",
        `${tag} Envoy: file write → first 200 on /probe-<i>, p99 (max)`,
        `${ms(r.servedP99)} (${ms(r.servedMax)})`,
        "≤ 150 ms",
      );
      row(
        "1",
        `${tag} Envoy: file write → RDS push at an ADS observer, p50 / p99`,
        `${ms(r.pushP50)} / ${ms(r.pushP99)}`,
      );
      if (failures) row("1", `${tag} Envoy: changes never served within 10 s`, String(failures));
    } finally {
      observer.close();
      agent.destroy();
      await stop();
    }
  }
  results.changeToServed = out;
  await cp.stop();
}

// ---------------------------------------------------------------------------------------------
// 2. One change ACKed by a simulated fleet

async function section2(): Promise<void> {
  console.log("\n[2] one change fanned out to simulated ADS clients");
  let edsPort = 20_000;
  let routeTag = 0;
  const { cp } = await ControlPlaneProcess.start("s2", JSON.stringify(fleetConfig(edsPort, routeTag)));
  const names = {
    eds: Array.from({ length: P.fleetUpstreams }, (_, k) => `up-${k}`),
    rds: ["fleet/http"],
  };
  const sizes = buildSnapshots(validateConfig(fleetConfig(edsPort, routeTag))).get("fleet")!;
  const rdsBytes = [...sizes.get(TypeUrl.Route).resources.values()].reduce((n, r) => n + r.any.length, 0);
  const runs: unknown[] = [];
  const variants: { n: number; protocol: "sotw" | "delta"; shared: boolean }[] = [];
  for (const n of P.fleetSizes)
    for (const protocol of P.fleetProtocols) variants.push({ n, protocol, shared: false });
  // One run on a single shared connection, to show what the default grpc-js pooling measures.
  variants.push({ n: LONG ? Math.max(...P.fleetSizes) : 100, protocol: "delta", shared: true });

  for (const v of variants) {
    const fleet = new Fleet(cp.target, "fleet", v.protocol, names, v.shared);
    cleanups.push(() => fleet.close());
    try {
      const syncMs = await fleet.grow(v.n);
      const connections = connectionsTo(cp.xdsPort);
      const eds: number[] = [];
      const rds: number[] = [];
      const edsMedianClient: number[] = [];
      const rdsMedianClient: number[] = [];
      let acksConfirmed = true;
      const serverAcked: number[] = [];
      const change = async (typeUrl: string, next: () => ConfigInput, into: number[], mid: number[]) => {
        const type = typeUrl === TypeUrl.Route ? "RouteConfiguration" : "ClusterLoadAssignment";
        const acksBefore = await cp.metric("portico_xds_acks_total", { type });
        const text = JSON.stringify(next());
        const w = fleet.waitAllNew(typeUrl);
        const t0 = now();
        w.start(t0);
        cp.write(text);
        await w.done;
        into.push(percentile(w.arrivals, 100));
        mid.push(percentile(w.arrivals, 50));
        // When the control plane has recorded every ACK: its /metrics is answered by the same event
        // loop that handles the ACKs, so this also shows how long ACK processing holds that loop.
        const ok = await waitFor(
          async () => (await cp.metric("portico_xds_acks_total", { type })) >= acksBefore + v.n,
          { what: "ACK count", timeoutMs: 60_000, intervalMs: 10 },
        ).catch(() => false);
        if (!ok) acksConfirmed = false;
        serverAcked.push(ok ? now() - t0 : NaN);
        await sleep(100);
      };
      for (let rep = 0; rep < P.fleetReps(v.n); rep++) {
        await change(TypeUrl.Endpoint, () => fleetConfig(++edsPort, routeTag), eds, edsMedianClient);
        await change(TypeUrl.Route, () => fleetConfig(edsPort, ++routeTag), rds, rdsMedianClient);
      }
      const r = {
        clients: v.n,
        reps: P.fleetReps(v.n),
        protocol: v.protocol,
        sharedConnection: v.shared,
        tcpConnections: connections,
        syncMs: round(syncMs),
        edsAllMedianMs: round(median(eds)),
        edsAllMaxMs: round(Math.max(...eds)),
        edsMedianClientMs: round(median(edsMedianClient)),
        rdsAllMedianMs: round(median(rds)),
        rdsAllMaxMs: round(Math.max(...rds)),
        rdsMedianClientMs: round(median(rdsMedianClient)),
        acksConfirmedByServer: acksConfirmed,
        serverRecordedAllAcksMedianMs: round(median(serverAcked)),
        serverRecordedAllAcksMaxMs: round(Math.max(...serverAcked)),
        clientErrors: fleet.errors,
        edsRunsMs: eds.map((x) => round(x)),
        rdsRunsMs: rds.map((x) => round(x)),
      };
      runs.push(r);
      const label = `${v.n} ${v.protocol === "sotw" ? "SotW" : "delta"} clients / ${connections} TCP conn${v.shared ? " (shared pool)" : ""}`;
      row(
        "2",
        `${label}: endpoint change, all ACKed, median (max)`,
        `${ms(median(eds))} (${ms(Math.max(...eds))})`,
        v.n >= 1000 ? "≤ 1 s" : undefined,
      );
      row(
        "2",
        `${label}: one-route change, all ACKed, median (max)`,
        `${ms(median(rds))} (${ms(Math.max(...rds))})`,
      );
      row(
        "2",
        `${label}:   control plane has recorded every ACK, median (max)`,
        `${ms(median(serverAcked))} (${ms(Math.max(...serverAcked))})`,
      );
      row(
        "2",
        `${label}: initial sync of all clients`,
        `${ms(syncMs)}${acksConfirmed ? "" : "  [server ACK count short]"}${fleet.errors ? `  [${fleet.errors} client errors]` : ""}`,
      );
    } finally {
      fleet.close();
      await waitNoNodes(cp).catch((err: Error) => notes.push(`section 2: ${err.message}`));
    }
  }
  results.fanOut = {
    config: { routes: P.fleetRoutes, clusters: P.fleetUpstreams, routeConfigurationBytes: rdsBytes },
    runs,
  };
  row(
    "2",
    `(RouteConfiguration of this ${P.fleetRoutes}-route config, re-sent whole on a route change)`,
    bytes(rdsBytes),
  );
  await cp.stop();
}

// ---------------------------------------------------------------------------------------------
// 3–5. The 10k-route config: cold push, bytes per change, memory with a fleet

async function sections345(): Promise<void> {
  const upstream = await startHttpUpstream("big");
  cleanups.push(() => upstream.close());
  const [bigPort, onePort] = await freePorts(2);
  const tags = { routeTag: 0, endpointTag: 0 };
  const cfg = () => bigConfig({ bigPort, onePort, upstreamPort: upstream.port, ...tags });
  const text = JSON.stringify(cfg());

  console.log(`\n[3] ${P.bigRoutes} routes / ${P.bigUpstreams} clusters`);
  // In process first, while nothing else competes for the CPU.
  const parseMs: number[] = [];
  const validateMs: number[] = [];
  const buildMs: number[] = [];
  let snapshots!: ReturnType<typeof buildSnapshots>;
  for (let k = 0; k < P.buildRuns; k++) {
    let t = now();
    const value = parseYamlText(text, "portico.yaml");
    parseMs.push(now() - t);
    t = now();
    const config = validateConfig(value);
    validateMs.push(now() - t);
    t = now();
    snapshots = buildSnapshots(config);
    buildMs.push(now() - t);
  }
  const snap = snapshots.get("big")!;
  const perType: Record<string, { resources: number; bytes: number }> = {};
  for (const t of FOUR_TYPES) {
    const res = [...snap.get(t).resources.values()];
    perType[t.slice(t.lastIndexOf(".") + 1)] = {
      resources: res.length,
      bytes: res.reduce((n, r) => n + r.any.length, 0),
    };
  }
  const rdsBytes = perType.RouteConfiguration!.bytes;
  row("3", "config file (JSON, which is YAML) size", bytes(Buffer.byteLength(text)));
  row(
    "3",
    "in-process YAML parse / validate (what every file change costs first)",
    `${ms(median(parseMs))} / ${ms(median(validateMs))}`,
  );
  row("3", "in-process translate + encode (buildSnapshots), median", ms(median(buildMs)));
  row(
    "3",
    "encoded: Cluster / CLA / Listener / RouteConfiguration",
    Object.values(perType)
      .map((x) => `${x.resources}×=${bytes(x.bytes)}`)
      .join(" / "),
  );
  row("3", "encoded total (one copy of the group's snapshot)", bytes(snap.byteSize()));

  // The same binary idle with a small config: what the runtime itself costs, before any config.
  const { cp: small } = await ControlPlaneProcess.start("small", JSON.stringify(fleetConfig(20_000, 0)));
  await sleep(2000);
  const rssSmall = await small.rss();
  await small.stop();

  const { cp, readyMs } = await ControlPlaneProcess.start("big", text);
  row("3", "control plane child: spawn → /readyz with this config", ms(readyMs));
  await sleep(2000);
  const rssFresh = await cp.rss();

  // Cold start: spawn → /ready (Envoy's init manager holds /ready until CDS, every cluster's EDS,
  // LDS and the listener's RDS are in), the 1-route group and the 10k group alternately.
  type Cold = Record<"one" | "big", number[]>;
  const cold: Record<"sotw" | "delta", Cold> = { sotw: { one: [], big: [] }, delta: { one: [], big: [] } };
  const verified: Record<string, Record<string, unknown>> = {};
  for (let run = 0; run < P.coldRuns; run++) {
    for (const protocol of ["sotw", "delta"] as const) {
      const order: ("one" | "big")[] = run % 2 === 0 ? ["one", "big"] : ["big", "one"];
      for (const group of order) {
        const t0 = now();
        const { e, stop } = await envoy(`cold-${group}-${protocol}-${run}`, group, cp.xdsPort, protocol);
        try {
          await e.waitReady({ timeoutMs: 60_000, intervalMs: 5 });
          cold[protocol][group].push(now() - t0);
          if (group === "big" && run === 0) verified[protocol] = await verifyBig(e, bigPort);
        } finally {
          await stop();
        }
      }
    }
  }
  const coldOut: Record<string, unknown> = {};
  for (const protocol of ["sotw", "delta"] as const) {
    const c = cold[protocol];
    const tag = protocol === "sotw" ? "SotW" : "delta";
    const ratio = median(c.big) / median(c.one);
    row("3", `fresh ${tag} Envoy, spawn → ready: 1-route group, median`, ms(median(c.one)));
    row(
      "3",
      `fresh ${tag} Envoy, spawn → ready: ${P.bigRoutes}-route group, median (ratio)`,
      `${ms(median(c.big))} (${ratio.toFixed(1)}×)`,
      "≤ 2 s",
    );
    row("3", `  verified after ready (${tag})`, String(verified[protocol]?.summary));
    coldOut[protocol] = {
      oneMs: c.one.map((x) => round(x)),
      bigMs: c.big.map((x) => round(x)),
      ratio: round(ratio),
      verified: verified[protocol],
    };
  }
  results.coldPush = {
    routes: P.bigRoutes,
    clusters: P.bigUpstreams,
    configFileBytes: Buffer.byteLength(text),
    parseMs: parseMs.map((x) => round(x)),
    validateMs: validateMs.map((x) => round(x)),
    buildSnapshotsMs: buildMs.map((x) => round(x)),
    encoded: perType,
    encodedTotalBytes: snap.byteSize(),
    controlPlaneReadyMs: round(readyMs),
    coldStart: coldOut,
  };

  // 4. Bytes per change, delta vs SotW.
  console.log("\n[4] bytes on the wire for one change, 10k config");
  const names = { eds: Array.from({ length: P.bigUpstreams }, (_, k) => upName(k)), rds: ["big/http"] };
  const pair = {
    delta: new Fleet(cp.target, "big", "delta", names, false),
    sotw: new Fleet(cp.target, "big", "sotw", names, false),
  };
  cleanups.push(() => {
    pair.delta.close();
    pair.sotw.close();
  });
  await Promise.all([pair.delta.grow(1), pair.sotw.grow(1)]);
  const initial = { delta: pair.delta.totalBytes, sotw: pair.sotw.totalBytes };
  const measureBytes = async (typeUrl: string, kind: "route" | "endpoint") => {
    if (kind === "route") tags.routeTag++;
    else tags.endpointTag++;
    const next = JSON.stringify(cfg());
    const buildBefore = await cp.metric("portico_snapshot_build_seconds_sum");
    const wd = pair.delta.waitAllNew(typeUrl);
    const ws = pair.sotw.waitAllNew(typeUrl);
    const t0 = now();
    wd.start(t0);
    ws.start(t0);
    cp.write(next);
    await Promise.all([wd.done, ws.done]);
    // Anything else the change causes (it should be nothing) arrives within this quiet period.
    await sleep(500);
    const buildS = (await cp.metric("portico_snapshot_build_seconds_sum")) - buildBefore;
    return {
      controlPlaneBuildMs: round(buildS * 1000),
      deltaBytes: wd.bytes(),
      sotwBytes: ws.bytes(),
      deltaLatencyMs: round(wd.arrivals[0]!),
      sotwLatencyMs: round(ws.arrivals[0]!),
    };
  };
  const routeChange = await measureBytes(TypeUrl.Route, "route");
  const endpointChange = await measureBytes(TypeUrl.Endpoint, "endpoint");
  pair.delta.close();
  pair.sotw.close();
  row("4", "initial sync, bytes received: delta / SotW", `${bytes(initial.delta)} / ${bytes(initial.sotw)}`);
  row(
    "4",
    "one-route change, bytes received: delta / SotW",
    `${bytes(routeChange.deltaBytes)} / ${bytes(routeChange.sotwBytes)}`,
  );
  row(
    "4",
    "one-endpoint change, bytes received: delta / SotW",
    `${bytes(endpointChange.deltaBytes)} / ${bytes(endpointChange.sotwBytes)}`,
  );
  row(
    "4",
    "file write → update at the client, route / endpoint change",
    `${ms(routeChange.deltaLatencyMs ?? NaN)} / ${ms(endpointChange.deltaLatencyMs ?? NaN)}`,
  );
  row(
    "4",
    "  of which translate + encode in the control plane (its own histogram)",
    `${ms(routeChange.controlPlaneBuildMs ?? NaN)} / ${ms(endpointChange.controlPlaneBuildMs ?? NaN)}`,
  );
  row(
    "4",
    "  note: one RouteConfiguration per listener → a route change re-sends the whole table",
    `(${bytes(rdsBytes)}) under both protocols`,
  );
  results.bytesPerChange = {
    initialSync: initial,
    routeChange,
    endpointChange,
    routeConfigurationBytes: rdsBytes,
  };
  await waitNoNodes(cp).catch((err: Error) => notes.push(`section 4: ${err.message}`));

  // What two changes and a few Envoy syncs leave behind in a process with no clients.
  const rssAfter34 = await cp.rss();
  const heapAfter34 = await cp.heap();
  row("5", "RSS with a 100-route config, no clients (same binary: runtime baseline)", mib(rssSmall));
  row("5", "RSS with the 10k config, no clients, fresh start", mib(rssFresh));
  row(
    "5",
    "  same process after sections 3-4 (6 Envoy syncs, 2 changes), no clients",
    `${mib(rssAfter34)}  ${heapText(heapAfter34)}`,
  );
  results.memoryBaseline = {
    rssSmallConfigKiB: rssSmall,
    rssFreshKiB: rssFresh,
    rssAfterSections34KiB: rssAfter34,
    heapAfter34,
  };
  await cp.stop();

  if (SECTIONS.has(5)) {
    results.memory = {};
    for (const protocol of LONG ? (["sotw", "delta"] as const) : (["sotw"] as const))
      await section5(protocol, JSON.stringify(cfg()), names);
  }
}

function heapText(h: { usedMiB: number; totalMiB: number; externalMiB: number }): string {
  return `(V8 heap ${h.usedMiB.toFixed(0)} used / ${h.totalMiB.toFixed(0)} MiB, external ${h.externalMiB.toFixed(0)} MiB)`;
}

// 5. Memory with a connected fleet, a fresh control plane per protocol so baselines are clean.
async function section5(protocol: "sotw" | "delta", text: string, names: { eds: string[]; rds: string[] }) {
  const tag = protocol === "sotw" ? "SotW" : "delta";
  console.log(`\n[5] control-plane RSS with ${P.rssClients} connected ${tag} clients, 10k config`);
  const { cp } = await ControlPlaneProcess.start(`mem-${protocol}`, text);
  await sleep(3000);
  const rssNone = await cp.rss();
  const heapNone = await cp.heap();
  let peak = 0;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, cp.status().rssKiB);
    } catch {
      // The process is gone; the run reports that elsewhere.
    }
  }, 50);
  cleanups.push(() => clearInterval(sampler));
  const fleet = new Fleet(cp.target, "big", protocol, names, false);
  cleanups.push(() => fleet.close());
  try {
    const syncMs = await fleet.grow(P.rssClients, 50, 300_000);
    const connections = connectionsTo(cp.xdsPort);
    const rampPeak = peak;
    await sleep(3000);
    const rssWith = await cp.rss();
    const heapWith = await cp.heap();
    // A one-route change on the 10k table, fanned out to the whole fleet.
    peak = 0;
    const config = JSON.parse(text) as ConfigInput;
    const r = config.routes!.find((x) => x.name === "r-05000")!;
    r.match = { pathPrefix: "/svc-5000-mem/" };
    const w = fleet.waitAllNew(TypeUrl.Route, 300_000);
    const t0 = now();
    w.start(t0);
    cp.write(config);
    await w.done;
    const fanMs = percentile(w.arrivals, 100);
    const fanPeak = peak;
    await sleep(2000);
    const rssAfterChange = await cp.rss();
    fleet.close();
    await waitNoNodes(cp).catch((err: Error) => notes.push(`section 5: ${err.message}`));
    await sleep(2000);
    const rssAfterClose = await cp.rss();
    const heapAfterClose = await cp.heap();
    const grew = rssWith - rssNone;
    row("5", `${tag}: RSS, 10k config, no clients (fresh process)`, `${mib(rssNone)}  ${heapText(heapNone)}`);
    row(
      "5",
      `${tag}: RSS with ${P.rssClients} synced clients (${connections} TCP conn.)`,
      `${mib(rssWith)}  ${heapText(heapWith)}`,
      P.rssClients >= 1000 ? "≤ 300 MiB" : undefined,
    );
    row(
      "5",
      `${tag}:   growth with the clients (${mib(grew)}) per client`,
      `${(grew / P.rssClients).toFixed(0)} KiB`,
    );
    row(
      "5",
      `${tag}:   peak RSS while they connected (batches of 50), time to sync all`,
      `${mib(rampPeak)}, ${ms(syncMs)}`,
    );
    row(
      "5",
      `${tag}: one-route change → all ${P.rssClients} ACKed (${bytes(w.bytes())} received in total)`,
      ms(fanMs),
    );
    row(
      "5",
      `${tag}:   peak RSS during that fan-out / after it / after clients left`,
      `${mib(fanPeak)} / ${mib(rssAfterChange)} / ${mib(rssAfterClose)}`,
    );
    (results.memory as Record<string, unknown>)[protocol] = {
      clients: P.rssClients,
      tcpConnections: connections,
      rssNoClientsKiB: rssNone,
      heapNoClients: heapNone,
      rssWithClientsKiB: rssWith,
      heapWithClients: heapWith,
      rampPeakKiB: rampPeak,
      syncMs: round(syncMs),
      fanOut: {
        allAckedMs: round(fanMs),
        medianClientMs: round(percentile(w.arrivals, 50)),
        bytesReceived: w.bytes(),
        peakRssKiB: fanPeak,
      },
      rssAfterChangeKiB: rssAfterChange,
      rssAfterCloseKiB: rssAfterClose,
      heapAfterClose,
      clientErrors: fleet.errors,
    };
  } finally {
    clearInterval(sampler);
    fleet.close();
    await cp.stop();
  }
}

async function verifyBig(e: EnvoyProcess, port: number): Promise<Record<string, unknown>> {
  const routeConfigs = await e.routeConfigs();
  const routes = routeConfigs
    .flatMap((rc: any) => (rc?.virtual_hosts ?? []) as any[])
    .reduce((n: number, vh: any) => n + ((vh.routes ?? []) as unknown[]).length, 0);
  const clusters = (await e.stat("cluster_manager.active_clusters")) ?? NaN;
  const agent = new http.Agent({ keepAlive: false });
  const res = await get(`http://127.0.0.1:${port}/svc-1234/x`, agent).catch(() => ({ status: 0 }));
  agent.destroy();
  return {
    routes,
    activeClusters: clusters,
    requestStatus: res.status,
    summary: `${routes} routes, ${clusters} active clusters (incl. xds_cluster), GET /svc-1234/ → ${res.status}`,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = now();
  const found = await findEnvoy({ log: (m) => process.stderr.write(`[find-envoy] ${m}\n`) });
  const cpus = os.cpus();
  const machine = {
    cores: cpus.length,
    cpu: cpus[0]?.model ?? "unknown",
    memGiB: round(os.totalmem() / 1024 ** 3, 1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    envoy: found.version,
    envoyBuild: found.versionLine,
    controlPlane: path.relative(REPO, CP_MAIN) || CP_MAIN,
  };
  console.log(`Portico xDS benchmark${QUICK ? " (--quick)" : LONG ? " (--long)" : ""}`);
  console.log(
    `machine: ${machine.cores} cores (${machine.cpu}), ${machine.memGiB} GiB, ${machine.kernel}; node ${machine.node}; envoy ${machine.envoy}`,
  );
  console.log(`control plane: ${CP_MAIN} (child process, --debounce-ms 0, LOG_LEVEL=warn)`);
  console.log(
    "figures are medians/percentiles over repeated runs on a noisy machine; treat ratios as the signal",
  );

  notes.push(
    "simulated clients (sections 2, 4, 5) are XdsClient with decode:false in this process, so they share the 2 cores with the control plane; SotW ones ask for CDS/LDS by wildcard and for EDS/RDS by name, as Envoy does",
    "each simulated client gets its own TCP connection (grpc-js would otherwise multiplex them all onto one, see the 'shared pool' run); the connection count is read from /proc/net/tcp",
  );
  let failed: Error | undefined;
  try {
    const timed = async (name: string, fn: () => Promise<void>) => {
      const t = now();
      try {
        await fn();
      } finally {
        sectionSeconds[name] = round((now() - t) / 1000, 1);
      }
    };
    if (SECTIONS.has(1)) await timed("1", section1);
    if (SECTIONS.has(2)) await timed("2", section2);
    if (SECTIONS.has(3) || SECTIONS.has(4) || SECTIONS.has(5)) await timed("3-5", sections345);
  } catch (err) {
    failed = err as Error;
  } finally {
    await runCleanups();
  }

  const totalS = (now() - started) / 1000;
  console.log(`\n${"=".repeat(124)}`);
  console.log(`${"sec".padEnd(4)} ${"metric".padEnd(84)} value`);
  console.log("-".repeat(124));
  for (const [s, m, v, aim] of rows)
    console.log(`${s.padEnd(4)} ${m.padEnd(84)} ${v}${aim ? `   [aim ${aim}]` : ""}`);
  console.log("-".repeat(124));
  for (const n of notes) console.log(`note: ${n}`);
  console.log(
    `total run time ${totalS.toFixed(1)} s (sections: ${Object.entries(sectionSeconds)
      .map(([k, v]) => `${k}: ${v} s`)
      .join(", ")})`,
  );

  fs.mkdirSync(path.dirname(argv.out), { recursive: true });
  fs.writeFileSync(
    argv.out,
    JSON.stringify(
      {
        at: new Date().toISOString(),
        quick: QUICK,
        machine,
        params: P,
        results,
        table: rows.map(([section, metric, value, aim]) => ({ section, metric, value, aim })),
        notes,
        error: failed ? failed.message : undefined,
        totalSeconds: round(totalS, 1),
        sectionSeconds,
      },
      null,
      2,
    ) + "\n",
  );
  console.log(`wrote ${path.relative(process.cwd(), argv.out)}`);
  if (failed) {
    console.error(`\nbenchmark aborted: ${failed.stack ?? failed.message}`);
    process.exitCode = 1;
  }
}

await main();
