// envoyproxy/ratelimit, the reference Go implementation, as a baseline beside the rate-limit
// service: built from the Go module proxy into a cache directory outside the repository on first
// use, and started against the same Redis. A bench baseline only; nothing else depends on Go.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { benchCacheDir, goBuild } from "./cache.js";

export const REFERENCE_MODULE = "github.com/envoyproxy/ratelimit";
/**
 * Upstream tags no releases its go.mod can be fetched at, so the proxy serves commits as
 * pseudo-versions: this one is main of 2026-01-22.
 */
export const REFERENCE_VERSION = "v1.4.1-0.20260122083618-3fb702589d36";
export const REFERENCE_NAME = `envoyproxy/ratelimit (Go, ${REFERENCE_VERSION.replace(/^v[\d.]+-0\.\d+-/, "main@")})`;

/** The reference server's binary, built on first use; or why there is none. */
export async function buildReference(): Promise<{ binary: string } | { error: string }> {
  const bin = path.join(benchCacheDir(), `envoyproxy-ratelimit-${REFERENCE_VERSION}`);
  const binary = path.join(bin, "service_cmd");
  if (fs.existsSync(binary)) return { binary };
  return goBuild(["install", `${REFERENCE_MODULE}/src/service_cmd@${REFERENCE_VERSION}`], binary, {
    env: { ...process.env, GOBIN: bin, GOFLAGS: "-mod=mod" },
    timeoutMs: 15 * 60_000,
  });
}

/**
 * The config the reference gets. Upstream allows one fixed-window limit per descriptor, with no
 * token bucket and no calendar periods; so the same descriptor with the same per-second limit, as
 * a fixed window: one INCRBY and one EXPIRE in one pipeline per decision.
 */
export const REFERENCE_CONFIG_YAML = `
domain: bench
descriptors:
  - key: api_key
    rate_limit: { unit: second, requests_per_unit: 1000000 }
`;

export interface ReferenceServer {
  child: ChildProcess;
  /** gRPC port. */
  port: number;
  stop(): void;
}

/**
 * Starts the reference with upstream's defaults (a pool of 10 Redis connections, no pipeline
 * window, no local cache, stats kept in memory), on loopback, and waits for its health check.
 */
export async function startReference(opts: {
  binary: string;
  redisPort: number;
  dir: string;
  ports: { grpc: number; http: number; debug: number };
}): Promise<ReferenceServer> {
  const root = path.join(opts.dir, "reference-runtime");
  fs.mkdirSync(path.join(root, "ratelimit", "config"), { recursive: true });
  fs.writeFileSync(path.join(root, "ratelimit", "config", "bench.yaml"), REFERENCE_CONFIG_YAML);
  const child = spawn(opts.binary, [], {
    env: {
      PATH: process.env.PATH ?? "",
      HOST: "127.0.0.1",
      PORT: String(opts.ports.http),
      DEBUG_HOST: "127.0.0.1",
      DEBUG_PORT: String(opts.ports.debug),
      GRPC_HOST: "127.0.0.1",
      GRPC_PORT: String(opts.ports.grpc),
      LOG_LEVEL: "warn",
      USE_STATSD: "false",
      RUNTIME_ROOT: root,
      RUNTIME_SUBDIRECTORY: "ratelimit",
      RUNTIME_WATCH_ROOT: "false",
      RUNTIME_IGNOREDOTFILES: "true",
      BACKEND_TYPE: "redis",
      REDIS_SOCKET_TYPE: "tcp",
      REDIS_URL: `127.0.0.1:${opts.redisPort}`,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  // Its stats sink logs every flush; only the last lines are kept, to say why it failed to start.
  let tail = "";
  child.stderr!.on("data", (b: Buffer) => (tail = (tail + b.toString()).slice(-2_000)));
  let exited: number | null | undefined;
  child.once("exit", (code) => (exited = code));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited !== undefined)
      throw new Error(`${REFERENCE_NAME} exited (${exited}) at start: ${tail.trim().split("\n").pop()}`);
    try {
      const res = await fetch(`http://127.0.0.1:${opts.ports.http}/healthcheck`);
      if (res.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${REFERENCE_NAME} did not pass its health check within 20 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, port: opts.ports.grpc, stop: () => child.kill("SIGTERM") };
}
