import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import {
  renderBootstrap,
  type IdentityFiles,
  type XdsProtocol,
  type XdsTlsOptions,
  findEnvoy,
  type FoundEnvoy,
} from "@portico/envoy";
import { httpRequest, type HttpResponse } from "./http.js";
import { waitFor } from "./wait.js";

export interface StartEnvoyOptions {
  nodeId: string;
  group: string;
  xdsPort: number;
  /** Default 127.0.0.1. */
  xdsHost?: string;
  protocol?: XdsProtocol;
  /** TLS (and mTLS) to the control plane; default plaintext. */
  xdsTls?: XdsTlsOptions;
  /** The gateway identity and internal CA files (bootstrap static secrets); default none. */
  identity?: IdentityFiles;
  /** A readiness listener on 0.0.0.0:<readyPort>; needs `adminPort`. */
  readyPort?: number;
  /** A fixed admin port; default 0 (Envoy picks one and reports it). */
  adminPort?: number;
  /** `-l`; default "info". */
  logLevel?: string;
  /** `--component-log-level`; default "upstream:debug,config:debug" so xDS traffic shows in logs. */
  componentLogLevel?: string;
  extraArgs?: string[];
  /** How long to wait for the admin API; default 30 000 ms. */
  startTimeoutMs?: number;
}

export interface EnvoyExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface WaitOpts {
  timeoutMs?: number;
  intervalMs?: number;
}

export interface EnvoyProcess {
  readonly nodeId: string;
  readonly group: string;
  readonly pid: number;
  readonly adminPort: number;
  /** http://127.0.0.1:<adminPort> */
  readonly adminUrl: string;
  /** Temp directory holding the bootstrap and the log; kept after stop() for post-mortems. */
  readonly dir: string;
  readonly bootstrapFile: string;
  readonly logFile: string;
  readonly binary: FoundEnvoy;
  /** null while running, or when the process ended by a signal (see `exit`). */
  readonly exitCode: number | null;
  /** Set once the process has exited and its output is drained. */
  readonly exit: EnvoyExit | undefined;
  readonly exited: Promise<EnvoyExit>;
  /** The last `lines` (default all kept, ~2000) lines of stdout and stderr. */
  logs(lines?: number): string;
  /** Resolves with the first log line matching `pattern` (existing lines included). */
  waitForLog(pattern: RegExp, what?: string, opts?: WaitOpts): Promise<string>;
  /** GET an admin path; throws on a non-2xx status. */
  admin(p: string): Promise<string>;
  /** POST an admin path (Envoy refuses GET for mutating endpoints); throws on a non-2xx status. */
  adminPost(p: string): Promise<string>;
  /** Any status, for endpoints such as /ready whose status is the answer. */
  adminRequest(p: string, method?: "GET" | "POST"): Promise<HttpResponse>;
  /** Waits for 200 from /ready, i.e. the initial xDS fetch finished. */
  waitReady(opts?: WaitOpts): Promise<void>;
  /** `state` from /server_info: PRE_INITIALIZING, INITIALIZING, LIVE, DRAINING. */
  serverState(): Promise<string>;
  configDump(): Promise<any>;
  /** Counters and gauges; histograms and text readouts are left out. */
  stats(): Promise<Map<string, number>>;
  stat(name: string): Promise<number | undefined>;
  waitForStat(
    name: string,
    predicate: (value: number) => boolean,
    what?: string,
    opts?: WaitOpts,
  ): Promise<number>;
  /** Names of active (not warming or draining) dynamic listeners. */
  listeners(): Promise<string[]>;
  /** Dynamic route configurations, as config_dump shows them. */
  routeConfigs(): Promise<any[]>;
  /** Filter configs Envoy fetched by ECDS, by name, as config_dump shows them. */
  extensionConfigs(): Promise<Map<string, any>>;
  /** Names of active dynamic clusters. */
  clusters(): Promise<string[]>;
  /** "address:port" of each host Envoy has for `cluster`; [] for an unknown cluster. */
  endpoints(cluster: string): Promise<string[]>;
  /** SIGTERM (or `signal`), then SIGKILL after 3 s; resolves once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<EnvoyExit>;
}

const LOG_RING_LINES = 2000;
const STOP_GRACE_MS = 3000;

/** Every Envoy not yet exited, so a crashed test run cannot leave proxies behind. */
const live = new Set<ChildProcess>();
let safetyNetInstalled = false;

function killAllNow(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

function installSafetyNet(): void {
  if (safetyNetInstalled) return;
  safetyNetInstalled = true;
  process.on("exit", killAllNow);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      killAllNow();
      // Keep the signal's usual effect unless someone else has taken charge of it.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

/** Envoys started by this module and still running. */
export function runningEnvoyCount(): number {
  return live.size;
}

const started = new Set<EnvoyProcess>();

/** Stops every Envoy this module started; for an afterAll. */
export async function stopAllEnvoys(): Promise<void> {
  await Promise.all([...started].map((p) => p.stop()));
}

let binary: Promise<FoundEnvoy> | undefined;

function envoyBinary(): Promise<FoundEnvoy> {
  binary ??= findEnvoy({ log: (m) => process.stderr.write(`[find-envoy] ${m}\n`) }).catch((err: unknown) => {
    binary = undefined;
    throw err;
  });
  return binary;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function dumpSection(dump: any, typeSuffix: string): any {
  const configs: any[] = Array.isArray(dump?.configs) ? dump.configs : [];
  return configs.find((c) => typeof c?.["@type"] === "string" && c["@type"].endsWith(typeSuffix)) ?? {};
}

function describeExit(e: EnvoyExit): string {
  return e.signal ? `signal ${e.signal}` : `code ${e.code}`;
}

export async function startEnvoy(o: StartEnvoyOptions): Promise<EnvoyProcess> {
  installSafetyNet();
  const bin = await envoyBinary();

  const base = path.join(tmpdir(), "portico-envoy");
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, `${o.nodeId.replace(/[^\w.-]+/g, "_")}-`));
  const bootstrapFile = path.join(dir, "bootstrap.yaml");
  const logFile = path.join(dir, "envoy.log");
  const adminAddressFile = path.join(dir, "admin-address");

  // Port 0 plus --admin-address-path: Envoy binds the admin port itself and reports it, so no
  // other process can grab a pre-picked port in between.
  await writeFile(
    bootstrapFile,
    renderBootstrap({
      nodeId: o.nodeId,
      group: o.group,
      xdsHost: o.xdsHost ?? "127.0.0.1",
      xdsPort: o.xdsPort,
      adminPort: o.adminPort ?? 0,
      protocol: o.protocol,
      xdsTls: o.xdsTls,
      identity: o.identity,
      readyPort: o.readyPort,
    }),
  );

  const args = [
    "-c",
    bootstrapFile,
    "--disable-hot-restart",
    "--concurrency",
    "1",
    "-l",
    o.logLevel ?? "info",
    "--component-log-level",
    o.componentLogLevel ?? "upstream:debug,config:debug",
    "--admin-address-path",
    adminAddressFile,
    ...(o.extraArgs ?? []),
  ];

  const ring: string[] = [];
  const logStream: WriteStream = createWriteStream(logFile);
  logStream.on("error", () => {});
  logStream.write(`# ${bin.path} ${args.join(" ")}\n`);

  const child = spawn(bin.path, args, { stdio: ["ignore", "pipe", "pipe"], cwd: dir });
  live.add(child);

  const onLine = (line: string) => {
    ring.push(line);
    if (ring.length > LOG_RING_LINES) ring.splice(0, ring.length - LOG_RING_LINES);
    logStream.write(`${line}\n`);
  };
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream!, crlfDelay: Infinity }).on("line", onLine);
  }

  let exit: EnvoyExit | undefined;
  // 'close' rather than 'exit': it fires after stdout/stderr are drained, so logs are complete.
  const exited = new Promise<EnvoyExit>((resolve) => {
    const finish = (e: EnvoyExit) => {
      if (exit) return;
      exit = e;
      live.delete(child);
      logStream.end(() => resolve(e));
    };
    child.once("error", (err) => {
      onLine(`[harness] ${bin.path}: ${err.message}`);
      // A process that never started gets no 'close'.
      if (child.pid === undefined) finish({ code: -1, signal: null });
    });
    child.once("close", (code, signal) => finish({ code, signal }));
  });

  const logs = (lines?: number): string => (lines === undefined ? ring : ring.slice(-lines)).join("\n");

  let adminPort = 0;
  const adminUrl = () => `http://127.0.0.1:${adminPort}`;

  const adminRequest = async (p: string, method: "GET" | "POST" = "GET"): Promise<HttpResponse> => {
    if (!adminPort) throw new Error("Envoy admin port not known yet");
    return httpRequest(adminUrl() + (p.startsWith("/") ? p : `/${p}`), { method, timeoutMs: 5000 });
  };
  const adminOk = async (p: string, method: "GET" | "POST"): Promise<string> => {
    const res = await adminRequest(p, method);
    if (res.status < 200 || res.status > 299) {
      throw new Error(`Envoy admin ${method} ${p} → ${res.status}: ${res.body.slice(0, 500)}`);
    }
    return res.body;
  };

  const stats = async (): Promise<Map<string, number>> =>
    parseStats(await adminOk("/stats?format=json", "GET"));

  const configDump = async (): Promise<any> => JSON.parse(await adminOk("/config_dump?include_eds", "GET"));

  let stopping: Promise<EnvoyExit> | undefined;
  const stop = (signal: NodeJS.Signals = "SIGTERM"): Promise<EnvoyExit> => {
    stopping ??= (async () => {
      if (!exit) {
        child.kill(signal);
        const timer = setTimeout(() => child.kill("SIGKILL"), STOP_GRACE_MS);
        try {
          await exited;
        } finally {
          clearTimeout(timer);
        }
      }
      return exited;
    })();
    return stopping;
  };

  const proc: EnvoyProcess = {
    nodeId: o.nodeId,
    group: o.group,
    pid: child.pid ?? -1,
    get adminPort() {
      return adminPort;
    },
    get adminUrl() {
      return adminUrl();
    },
    dir,
    bootstrapFile,
    logFile,
    binary: bin,
    get exitCode() {
      return exit?.code ?? null;
    },
    get exit() {
      return exit;
    },
    exited,
    logs,
    waitForLog: (pattern, what, opts) =>
      waitFor(() => ring.find((l) => pattern.test(l)), {
        what: what ?? `log line matching ${pattern} from Envoy ${o.nodeId}`,
        timeoutMs: opts?.timeoutMs,
        intervalMs: opts?.intervalMs ?? 50,
      }),
    admin: (p) => adminOk(p, "GET"),
    adminPost: (p) => adminOk(p, "POST"),
    adminRequest,
    async waitReady(opts) {
      await waitFor(
        async () => {
          if (exit) return "exited" as const;
          return (await adminRequest("/ready")).status === 200 && ("ready" as const);
        },
        {
          what: `Envoy ${o.nodeId} /ready to answer 200`,
          timeoutMs: opts?.timeoutMs,
          intervalMs: opts?.intervalMs,
        },
      ).then((r) => {
        if (r === "exited")
          throw new Error(`Envoy ${o.nodeId} exited (${describeExit(exit!)}) before it was ready`);
      });
    },
    async serverState() {
      return String(JSON.parse(await adminOk("/server_info", "GET")).state);
    },
    configDump,
    stats,
    async stat(name) {
      // Server-side filtering keeps this cheap when polled; the filter is an RE2 regex.
      const filter = encodeURIComponent(`^${escapeRegExp(name)}$`);
      return parseStats(await adminOk(`/stats?format=json&filter=${filter}`, "GET")).get(name);
    },
    waitForStat(name, predicate, what, opts) {
      return waitFor(
        async () => {
          const v = await proc.stat(name);
          return v !== undefined && predicate(v) ? { v } : undefined;
        },
        {
          what: what ?? `stat ${name} on Envoy ${o.nodeId} to satisfy ${predicate.toString()}`,
          timeoutMs: opts?.timeoutMs,
          intervalMs: opts?.intervalMs,
        },
      ).then((r) => r.v);
    },
    async listeners() {
      const s = dumpSection(await configDump(), ".ListenersConfigDump");
      return ((s.dynamic_listeners ?? []) as any[]).filter((l) => l.active_state).map((l) => String(l.name));
    },
    async routeConfigs() {
      const s = dumpSection(await configDump(), ".RoutesConfigDump");
      return ((s.dynamic_route_configs ?? []) as any[]).map((r) => r.route_config);
    },
    async extensionConfigs() {
      const s = dumpSection(await configDump(), ".EcdsConfigDump");
      return new Map(
        ((s.ecds_filters ?? []) as any[]).map((f) => [
          String(f.ecds_filter?.name),
          f.ecds_filter?.typed_config,
        ]),
      );
    },
    async clusters() {
      const s = dumpSection(await configDump(), ".ClustersConfigDump");
      return ((s.dynamic_active_clusters ?? []) as any[]).map((c) => String(c.cluster?.name));
    },
    async endpoints(cluster) {
      const body = JSON.parse(await adminOk("/clusters?format=json", "GET"));
      const status = ((body.cluster_statuses ?? []) as any[]).find((c) => c.name === cluster);
      return ((status?.host_statuses ?? []) as any[]).map((h) => {
        const sa = h.address?.socket_address;
        if (sa) return `${sa.address}:${sa.port_value}`;
        return String(h.address?.pipe?.path ?? JSON.stringify(h.address));
      });
    },
    stop,
  };
  started.add(proc);
  void exited.then(() => started.delete(proc));

  const tail = () => logs(60);
  let up: "up" | "exited";
  try {
    up = await waitFor(
      async () => {
        if (exit) return "exited" as const;
        if (!adminPort) {
          // Envoy writes "127.0.0.1:<port>" once the admin listener is bound.
          const text = (await readFile(adminAddressFile, "utf8").catch(() => "")).trim();
          const m = /:(\d+)$/.exec(text);
          if (!m) return undefined;
          adminPort = Number(m[1]);
        }
        await adminRequest("/ready");
        return "up" as const;
      },
      { what: `Envoy ${o.nodeId} admin API`, timeoutMs: o.startTimeoutMs ?? 30_000, intervalMs: 25 },
    );
  } catch (err) {
    await stop("SIGKILL");
    throw new Error(`${(err as Error).message}\n--- last Envoy log lines (${logFile}) ---\n${tail()}`, {
      cause: err,
    });
  }
  if (up === "exited") {
    throw new Error(
      `Envoy ${o.nodeId} exited (${describeExit(exit!)}) before its admin API answered; ` +
        `command: ${bin.path} ${args.join(" ")}\n--- last Envoy log lines (${logFile}) ---\n${tail()}`,
    );
  }
  return proc;
}

/** Parses /stats?format=json; histograms and text readouts (string values) are skipped. */
export function parseStats(body: string): Map<string, number> {
  const out = new Map<string, number>();
  const parsed = JSON.parse(body) as { stats?: Array<{ name?: string; value?: unknown }> };
  for (const s of parsed.stats ?? []) {
    if (typeof s.name === "string" && typeof s.value === "number") out.set(s.name, s.value);
  }
  return out;
}
