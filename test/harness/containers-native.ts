/**
 * The `native` backend: what deploy/docker-compose.yml runs, as local processes. The seed is the
 * compose seed itself with every compose host:port rewritten to a free loopback port, and each
 * service gets the flags its compose command gives it, so both backends exercise one config.
 * Which Envoy serves which gateway group comes from the compose file's bootstrap mounts.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import type http from "node:http";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parse, stringify } from "yaml";
import { startRedis, type RedisServer } from "./redis-server.js";
import { startSampleUpstream, stopProcess } from "@portico/deploy";
import { REPO_ROOT } from "@portico/envoy";
import type { GatewayStack } from "./containers.js";
import { composeEnvoyGroups, composeHealthCheck, DEPLOY_DIR } from "./containers-compose-file.js";
import { startEnvoy, type EnvoyProcess } from "./envoy.js";
import { freePorts } from "./ports.js";
import { waitFor } from "./wait.js";

const RING_LINES = 300;
const seconds = (since: number) => Math.round((Date.now() - since) / 100) / 10;

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
 * `listeners` where each gateway group's first listener now is.
 */
export async function nativeSeed(
  envoyGroups: Map<string, { group: string }>,
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

interface Service {
  name: string;
  child: ChildProcess;
  lines: string[];
}

function spawnService(name: string, main: string, args: string[], env: NodeJS.ProcessEnv = {}): Service {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(REPO_ROOT, main), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
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
  return { name, child, lines };
}

function probe(service: string, port: number): Promise<boolean> {
  const [cmd, ...args] = composeHealthCheck(service, port);
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

export async function startNativeStack(log: (line: string) => void): Promise<GatewayStack> {
  const timings: Record<string, number> = {};
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-native-stack-"));
  const services: Service[] = [];
  const envoys: EnvoyProcess[] = [];
  const upstreams: http.Server[] = [];
  let redis: RedisServer | undefined;
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const t = Date.now();
    await Promise.all(envoys.map((e) => e.stop()));
    await Promise.all(services.map((s) => stopProcess(s.child, 3_000)));
    await Promise.all(upstreams.map((u) => new Promise((resolve) => u.close(resolve))));
    await redis?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    timings.down = seconds(t);
  };
  const logs = async () =>
    [
      ...services.map((s) => `--- ${s.name} ---\n${s.lines.join("\n")}`),
      ...envoys.map((e) => `--- envoy ${e.nodeId} (${e.group}) ---\n${e.logs(100)}`),
    ].join("\n");

  try {
    const envoyGroups = composeEnvoyGroups();
    const { config, ports, listeners } = await nativeSeed(envoyGroups);
    const port = (key: string) => {
      const p = ports.get(key);
      if (p === undefined) throw new Error(`the compose seed no longer has an endpoint ${key}`);
      return p;
    };
    const seedFile = path.join(dir, "portico.yaml");
    fs.writeFileSync(seedFile, stringify(config));
    const [xdsPort, adminPort, rlMetricsPort, authzMetricsPort] = await freePorts(4);
    const healthChecks: [string, number][] = [];
    const xds = `127.0.0.1:${xdsPort}`;
    const adminToken = randomBytes(18).toString("hex");

    // As in compose: Redis holds the control plane's store, the rate limiter's counters and the
    // aggregator's stale answers. Without redis-server the stack does not start: a run that
    // passed on the file store and memory counters would claim to have tested Redis.
    try {
      redis = await startRedis();
    } catch (err) {
      throw new Error(
        `the native stack runs Redis as compose does, and could not: ${(err as Error).message}`,
      );
    }

    services.push(
      spawnService(
        "control-plane",
        "control-plane/src/main.ts",
        [
          `--store=${redis.url}`,
          `--config=${seedFile}`,
          `--xds-port=${xdsPort}`,
          `--admin-port=${adminPort}`,
          `--tokens-file=${path.join(dir, "tokens.json")}`,
        ],
        { PORTICO_ADMIN_TOKEN: adminToken },
      ),
    );
    await waitFor(() => probe("control-plane", adminPort), {
      what: "the control plane to be ready",
      timeoutMs: 60_000,
      intervalMs: 250,
    });

    const authzPort = port("ext-authz:9191");
    const rlPort = port("ratelimit:8081");
    const aggPort = port("aggregator:8090");
    services.push(
      spawnService("ext-authz", "ext-authz/src/main.ts", [
        `--xds=${xds}`,
        `--listen=127.0.0.1:${authzPort}`,
        `--metrics=127.0.0.1:${authzMetricsPort}`,
      ]),
      spawnService("ratelimit", "ratelimit-service/src/main.ts", [
        `--xds=${xds}`,
        `--listen=127.0.0.1:${rlPort}`,
        `--metrics-listen=127.0.0.1:${rlMetricsPort}`,
        `--backend=${redis.url}`,
      ]),
      spawnService("aggregator", "aggregator/src/main.ts", [
        `--xds=${xds}`,
        `--listen=127.0.0.1:${aggPort}`,
        `--redis=${redis.url}`,
      ]),
    );
    for (const name of ["users", "orders"])
      upstreams.push(await startSampleUpstream(name, port(`${name}:8080`)));
    await Promise.all(
      (
        [
          ["ext-authz", authzMetricsPort],
          ["ratelimit", rlMetricsPort],
          ["aggregator", aggPort],
          ["users", port("users:8080")],
          ["orders", port("orders:8080")],
        ] as const
      ).map(([service, at]) =>
        waitFor(() => probe(service, at), {
          what: `${service} to be healthy (its compose health check)`,
          timeoutMs: 60_000,
          intervalMs: 250,
        }),
      ),
    );

    for (const [service, { group, nodeId }] of envoyGroups) {
      const envoy = await startEnvoy({ nodeId: `${nodeId}-native`, group, xdsPort, logLevel: "warn" });
      envoys.push(envoy);
      healthChecks.push([service, envoy.adminPort]);
    }
    await Promise.all(
      healthChecks.map(([service, at]) =>
        waitFor(() => probe(service, at), {
          what: `${service} to be healthy (its compose health check)`,
          timeoutMs: 30_000,
          intervalMs: 250,
        }),
      ),
    );
    timings.up = seconds(started);

    const edgePort = listeners.get("edge");
    const bffWebPort = listeners.get("bff-web");
    if (!edgePort || !bffWebPort) throw new Error("the compose seed has no edge or bff-web gateway");
    const stack: GatewayStack = {
      mode: "native",
      edgeUrl: `http://127.0.0.1:${edgePort}`,
      bffWebUrl: `http://127.0.0.1:${bffWebPort}`,
      adminUrl: `http://127.0.0.1:${adminPort}`,
      adminToken,
      timings,
      logs,
      stop,
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
