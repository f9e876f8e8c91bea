/**
 * The `native` backend: what deploy/docker-compose.yml runs, as local processes. The seed is the
 * compose seed itself with every compose host:port rewritten to a free loopback port, and each
 * service runs the command, environment and health check its compose service has, with hosts,
 * ports and paths moved here: the same PKI (made by the same PKI init, from the `certs` service's
 * flags, with 127.0.0.1 added to every certificate's names), the same TLS flags, the same Redis
 * ACL. Which Envoy serves which gateway group, and with which bootstrap options, comes from the
 * compose file's bootstrap mounts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parse, stringify } from "yaml";
import {
  composeBootstrapOptions,
  COMPOSE_PKI_DIR,
  runPkiInit,
  runProbe,
  startSampleUpstream,
  stopProcess,
  type ProbeResult,
} from "@portico/deploy";
import { REPO_ROOT } from "@portico/envoy";
import type { GatewayStack } from "./containers.js";
import {
  composeEnvoyGroups,
  composeFile,
  composeHealthCheck,
  composeHealthPort,
  composePkiMount,
  DEPLOY_DIR,
  interpolate,
} from "./containers-compose-file.js";
import { startEnvoy, type EnvoyProcess } from "./envoy.js";
import { freePorts } from "./ports.js";
import { redisToolPath } from "./redis-server.js";
import { waitFor } from "./wait.js";

const RING_LINES = 300;
const seconds = (since: number) => Math.round((Date.now() - since) / 100) / 10;
/** The Portico services of the compose file, in start order after Redis. */
const PORTICO_SERVICES = ["control-plane", "ext-authz", "ratelimit", "aggregator"] as const;

interface Endpoint {
  host: string;
  port: number;
}
interface SeedConfig {
  gateways: {
    name: string;
    listeners: (Endpoint & { address?: string })[];
    aggregator?: { partsListener?: { address?: string; port: number } };
  }[];
  upstreams: { name: string; endpoints: Endpoint[] }[];
  [k: string]: unknown;
}

/**
 * The compose seed with each compose `service:port` (a listener of a service's Envoy, or an
 * upstream endpoint) moved to its own free loopback port; `ports` says where each went, and
 * `listeners` where each gateway group's first listener now is. `extra` are more `service:port`
 * keys to give ports to (the services' own flags name some the seed does not).
 */
export async function nativeSeed(
  envoyGroups: Map<string, { group: string }>,
  extra: string[] = [],
): Promise<{ config: SeedConfig; ports: Map<string, number>; listeners: Map<string, number> }> {
  const config = parse(fs.readFileSync(path.join(DEPLOY_DIR, "compose/portico.yaml"), "utf8")) as SeedConfig;
  const serviceOf = new Map([...envoyGroups].map(([svc, { group }]) => [group, svc]));
  const listenerKey = (group: string, port: number) => {
    const svc = serviceOf.get(group);
    if (!svc) throw new Error(`no Envoy in docker-compose.yml serves the gateway group '${group}'`);
    return `${svc}:${port}`;
  };
  const keys = new Set<string>();
  for (const g of config.gateways) {
    for (const l of g.listeners) keys.add(listenerKey(g.name, l.port));
    if (g.aggregator?.partsListener) keys.add(listenerKey(g.name, g.aggregator.partsListener.port));
  }
  for (const u of config.upstreams) for (const e of u.endpoints) keys.add(`${e.host}:${e.port}`);
  for (const k of extra) keys.add(k);
  const free = await freePorts(keys.size);
  const ports = new Map([...keys].map((k, i) => [k, free[i]!]));
  for (const g of config.gateways) {
    for (const l of g.listeners)
      Object.assign(l, { address: "127.0.0.1", port: ports.get(listenerKey(g.name, l.port)) });
    const pl = g.aggregator?.partsListener;
    if (pl) Object.assign(pl, { address: "127.0.0.1", port: ports.get(listenerKey(g.name, pl.port)) });
  }
  for (const u of config.upstreams)
    for (const e of u.endpoints)
      Object.assign(e, { host: "127.0.0.1", port: ports.get(`${e.host}:${e.port}`) });
  // Each group's first listener: where a client of that gateway connects.
  const listeners = new Map(config.gateways.map((g) => [g.name, g.listeners[0]!.port]));
  return { config, ports, listeners };
}

/**
 * The `certs` service's PKI init flags for a run here: its own output directory, no owners (the
 * files stay this user's), and 127.0.0.1 added to every workload's names, since every peer here
 * dials it at that address (while sending its compose name as SNI where it can).
 */
export function nativePkiArgs(certsCommand: string[], out: string): string[] {
  const args = [`--out=${out}`];
  for (const arg of certsCommand.slice(1)) {
    if (/^--(out|[a-z]+-owner)=/.test(arg)) continue;
    const m = /^--(control-plane|policy|gateway)=(.*)$/.exec(arg);
    if (!m) {
      args.push(arg);
      continue;
    }
    const [, kind, value] = m as unknown as [string, string, string];
    if (kind === "control-plane") {
      args.push(`--control-plane=${value},127.0.0.1`);
      continue;
    }
    const [name, names] = value.includes("=") ? value.split("=", 2) : [value, kind === "policy" ? value : ""];
    args.push(`--${kind}=${name}=${[names, "127.0.0.1"].filter(Boolean).join(",")}`);
  }
  return args;
}

interface Service {
  name: string;
  child: ChildProcess;
  lines: string[];
}

function spawnService(name: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Service {
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (line) => {
      lines.push(line);
      if (lines.length > RING_LINES) lines.shift();
    });
  }
  child.on("exit", (code, signal) => lines.push(`# exited: ${signal ?? `code ${code}`}`));
  child.on("error", (err) => lines.push(`# ${command}: ${err.message}`));
  return { name, child, lines };
}

function runCheck(command: string[]): Promise<boolean> {
  const [cmd, ...args] = command;
  return new Promise((resolve) => {
    const child = spawn(cmd!, args, { cwd: REPO_ROOT, stdio: "ignore" });
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
    child.on("error", () => resolve(false));
  });
}

/** A compose `HOST:PORT`: a compose service's name (or a bind-all/loopback address) and a port. */
const HOST_PORT = /\b([a-z][a-z0-9-]*|0\.0\.0\.0|127\.0\.0\.1):(\d{2,5})\b/g;

export async function startNativeStack(log: (line: string) => void): Promise<GatewayStack> {
  const timings: Record<string, number> = {};
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-native-stack-"));
  const services: Service[] = [];
  const envoys: EnvoyProcess[] = [];
  const upstreams: http.Server[] = [];
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const t = Date.now();
    await Promise.all(envoys.map((e) => e.stop()));
    // Redis last: the others flush to it as they stop.
    await Promise.all(services.filter((s) => s.name !== "redis").map((s) => stopProcess(s.child, 3_000)));
    await Promise.all(services.filter((s) => s.name === "redis").map((s) => stopProcess(s.child, 3_000)));
    await Promise.all(upstreams.map((u) => new Promise((resolve) => u.close(resolve))));
    fs.rmSync(dir, { recursive: true, force: true });
    timings.down = seconds(t);
  };
  const logs = async () =>
    [
      ...services.map((s) => `--- ${s.name} ---\n${s.lines.join("\n")}`),
      ...envoys.map((e) => `--- envoy ${e.nodeId} (${e.group}) ---\n${e.logs(100)}`),
    ].join("\n");

  try {
    const compose = composeFile();
    const service = (name: string) => {
      const s = compose.services[name];
      if (!s?.command) throw new Error(`docker-compose.yml has no service '${name}' with a command`);
      return s as typeof s & { command: string[] };
    };
    const envoyGroups = composeEnvoyGroups();
    // Every HOST:PORT the services' own flags name gets a loopback port too (as `service:port`).
    const named = PORTICO_SERVICES.flatMap((name) =>
      service(name).command.flatMap((arg) =>
        [...arg.matchAll(HOST_PORT)].map(([, host, p]) =>
          host === "0.0.0.0" || host === "127.0.0.1" ? `${name}:${p}` : `${host}:${p}`,
        ),
      ),
    );
    const { config, ports, listeners } = await nativeSeed(envoyGroups, [
      "control-plane:9000",
      "redis:6379",
      ...named,
    ]);
    const port = (key: string) => {
      const p = ports.get(key);
      if (p === undefined) throw new Error(`the compose file no longer has an endpoint ${key}`);
      return p;
    };
    const seedFile = path.join(dir, "portico.yaml");
    fs.writeFileSync(seedFile, stringify(config));
    const adminToken = randomBytes(18).toString("hex");

    // The PKI, as the `certs` service makes it.
    const pki = path.join(dir, "pki");
    await runPkiInit(nativePkiArgs(service("certs").command, pki), {});
    /** A compose path under the service's PKI mount, moved to its directory here. */
    const pkiPaths = (name: string, text: string) => {
      const mount = composePkiMount(name);
      return mount ? text.replaceAll(mount.mountPath, path.join(pki, mount.dir)) : text;
    };

    // As in compose: Redis holds the control plane's store, the rate limiter's counters and the
    // aggregator's stale answers, behind its ACL. Without redis-server the stack does not start: a
    // run that passed on the file store and memory counters would claim to have tested Redis.
    const redisPort = port("redis:6379");
    const redisDir = path.join(dir, "redis");
    fs.mkdirSync(redisDir);
    const [redisBin, ...redisArgs] = service("redis").command.map((a) =>
      a === "/data" ? redisDir : pkiPaths("redis", a),
    );
    if (redisBin !== "redis-server") throw new Error(`compose's redis runs ${redisBin}, not redis-server`);
    services.push(
      spawnService("redis", redisToolPath("redis-server"), [
        ...redisArgs,
        "--port",
        String(redisPort),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
      ]),
    );
    const redisCheck = composeHealthCheck("redis", redisPort).map((a) => pkiPaths("redis", a));
    await waitFor(() => runCheck(redisCheck), {
      what: "Redis to be healthy (its compose health check)",
      timeoutMs: 20_000,
      intervalMs: 100,
    });

    /** A compose service's flag or variable, moved here. */
    const rewrite = (name: string, arg: string) =>
      pkiPaths(name, arg)
        .replace("/etc/portico/portico.yaml", seedFile)
        .replace(/^--(xds-host|admin-host|parts-host)=.*$/, (_, f: string) => `--${f}=127.0.0.1`)
        .replace(HOST_PORT, (_, host: string, p: string) =>
          host === "0.0.0.0" || host === "127.0.0.1"
            ? `127.0.0.1:${port(`${name}:${p}`)}`
            : `127.0.0.1:${port(`${host}:${p}`)}`,
        );
    const env = { ...process.env, PORTICO_ADMIN_TOKEN: adminToken, LOG_LEVEL: "info" };
    const spawnPortico = (name: string, extraArgs: string[] = [], extraEnv: NodeJS.ProcessEnv = {}) => {
      const [main, ...args] = service(name).command;
      const source = main!.replace(/\/dist\/(.*)\.js$/, "/src/$1.ts");
      if (!fs.existsSync(path.join(REPO_ROOT, source)))
        throw new Error(`${name}: no source ${source} for ${main}`);
      const environment = Object.fromEntries(
        Object.entries(service(name).environment ?? {}).map(([k, v]) => [
          k,
          rewrite(name, interpolate(v, env)),
        ]),
      );
      return spawnService(
        name,
        process.execPath,
        ["--import", "tsx", path.join(REPO_ROOT, source), ...args.map((a) => rewrite(name, a)), ...extraArgs],
        { ...environment, ...extraEnv },
      );
    };
    const healthy = (name: string, at: number, timeoutMs = 60_000) => {
      const check = composeHealthCheck(name, at).map((a) => pkiPaths(name, a));
      return waitFor(() => runCheck(check), {
        what: `${name} to be healthy (its compose health check)`,
        timeoutMs,
        intervalMs: 250,
      });
    };

    const xdsPort = port("control-plane:18000");
    const adminPort = port("control-plane:9000");
    services.push(
      spawnPortico(
        "control-plane",
        [
          `--xds-port=${xdsPort}`,
          `--admin-port=${adminPort}`,
          `--tokens-file=${path.join(dir, "tokens.json")}`,
        ],
        // The image's environment (deploy/Dockerfile) keeps the secrets key under /data.
        { PORTICO_SECRETS_KEY_FILE: path.join(dir, "secrets.key") },
      ),
    );
    await healthy("control-plane", adminPort);

    services.push(spawnPortico("ext-authz"), spawnPortico("ratelimit"), spawnPortico("aggregator"));
    for (const name of ["users", "orders"])
      upstreams.push(await startSampleUpstream(name, port(`${name}:8080`)));
    // Each health check probes the port its compose check names, moved here.
    await Promise.all(
      ["ext-authz", "ratelimit", "aggregator", "users", "orders"].map((name) =>
        healthy(name, port(`${name}:${composeHealthPort(name)}`)),
      ),
    );

    // Each Envoy with its compose bootstrap's options: the same identity and xDS mTLS, the admin
    // interface on loopback, GET /ready on its own port; only the addresses differ.
    const envoyPorts = await freePorts(envoyGroups.size * 2);
    const healthChecks: [string, number][] = [];
    let i = 0;
    for (const [name, { group, nodeId }] of envoyGroups) {
      const o = composeBootstrapOptions(nodeId, group);
      const files = (f: string) => pkiPaths(name, f);
      if (!o.xdsTls || !o.identity || o.readyPort === undefined)
        throw new Error(`the compose bootstrap of ${name} has no xDS TLS, identity or ready port`);
      const [admin, ready] = [envoyPorts[i++]!, envoyPorts[i++]!];
      const envoy = await startEnvoy({
        nodeId: `${nodeId}-native`,
        group,
        xdsPort,
        xdsHost: "127.0.0.1",
        xdsTls: {
          caFile: files(o.xdsTls.caFile),
          certFile: o.xdsTls.certFile && files(o.xdsTls.certFile),
          keyFile: o.xdsTls.keyFile && files(o.xdsTls.keyFile),
          serverName: o.xdsTls.serverName ?? o.xdsHost,
        },
        identity: {
          certFile: files(o.identity.certFile),
          keyFile: files(o.identity.keyFile),
          caFile: files(o.identity.caFile),
        },
        adminPort: admin,
        readyPort: ready,
        logLevel: "warn",
      });
      envoys.push(envoy);
      healthChecks.push([name, ready]);
    }
    await Promise.all(healthChecks.map(([name, at]) => healthy(name, at, 30_000)));
    timings.up = seconds(started);

    const edgePort = listeners.get("edge");
    const bffWebPort = listeners.get("bff-web");
    if (!edgePort || !bffWebPort) throw new Error("the compose seed has no edge or bff-web gateway");

    const probe = async (args: string[], as?: string): Promise<ProbeResult> => {
      const [kind] = args;
      const local = args.map((a) =>
        (as ? a.replaceAll(COMPOSE_PKI_DIR, path.join(pki, as)) : a).replace(
          HOST_PORT,
          (_, host: string, p: string) => `127.0.0.1:${port(`${host}:${p}`)}`,
        ),
      );
      // The compose name the client would have dialled, for SNI and the server's certificate.
      const target = args[1]?.split(":")[0];
      if ((kind === "tls" || kind === "grpc") && target && !args.some((a) => a.startsWith("--servername")))
        local.push(`--servername=${target}`);
      return runProbe(local);
    };
    const stack: GatewayStack = {
      mode: "native",
      edgeUrl: `http://127.0.0.1:${edgePort}`,
      bffWebUrl: `http://127.0.0.1:${bffWebPort}`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      adminToken,
      timings,
      logs,
      stop,
      probe,
    };
    const t = Date.now();
    await waitFor(
      async () => {
        const [edge, bff] = await Promise.all([
          fetch(`${stack.edgeUrl}/users/1`, { signal: AbortSignal.timeout(2000) }),
          fetch(`${stack.bffWebUrl}/web/users/1`, { signal: AbortSignal.timeout(2000) }),
        ]);
        return edge.status === 200 && bff.status === 200;
      },
      {
        what: "the edge and bff-web Envoys to route to the users service",
        timeoutMs: 60_000,
        intervalMs: 250,
      },
    );
    timings.ready = seconds(t);
    return stack;
  } catch (err) {
    log(`[stack] native start failed; logs:\n${await logs()}`);
    await stop();
    throw err;
  }
}
