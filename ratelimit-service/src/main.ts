import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { collectDefaultMetrics, Registry } from "prom-client";
import {
  DEFAULT_MAX_KEYS,
  createLogger,
  hostPortFlag,
  positiveFlag,
  serviceTls,
  stopOnSignals,
  startOpsServer,
  type OpsServer,
  tracingFromEnv,
  redisCredentialsFromEnv,
  withRedisCredentials,
  xdsClientTls,
} from "@portico/common";
import { isLoopbackHost } from "@portico/contract";
import { createLimiter, type BackendOptions } from "./backend.js";
import { loadConfig } from "./config/load.js";
import { XdsConfigSource } from "./config/xds-source.js";
import type { FailureMode } from "./limiter/types.js";
import { parseRedisSpec } from "./redis/connect.js";
import { RateLimitMetrics } from "./service/metrics.js";
import { startRateLimitService } from "./service/server.js";
import { DEFAULT_LIMIT_HEADERS, type LimitHeaderNames } from "./service/verdict.js";

const env = process.env;
const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    config: {
      type: "string",
      short: "c",
      default: env.PORTICO_RATELIMIT_CONFIG ?? path.join(here, "..", "config"),
    },
    listen: { type: "string", default: env.PORTICO_RATELIMIT_LISTEN ?? "127.0.0.1:8081" },
    "metrics-listen": { type: "string", default: env.PORTICO_RATELIMIT_METRICS_LISTEN ?? "127.0.0.1:6070" },
    backend: { type: "string", default: env.PORTICO_RATELIMIT_BACKEND ?? "memory" },
    mode: { type: "string", default: env.PORTICO_RATELIMIT_MODE ?? "local-first" },
    "sync-period-ms": { type: "string", default: env.PORTICO_RATELIMIT_SYNC_PERIOD_MS ?? "100" },
    "sync-hits": { type: "string", default: env.PORTICO_RATELIMIT_SYNC_HITS ?? "100" },
    "failure-mode": { type: "string", default: env.PORTICO_RATELIMIT_FAILURE_MODE ?? "local" },
    "redis-timeout-ms": { type: "string", default: env.PORTICO_RATELIMIT_REDIS_TIMEOUT_MS ?? "10" },
    "over-limit-cache-keys": {
      type: "string",
      default: env.PORTICO_RATELIMIT_OVER_LIMIT_CACHE_KEYS ?? String(DEFAULT_MAX_KEYS),
    },
    instances: { type: "string", default: env.PORTICO_RATELIMIT_INSTANCES ?? "auto" },
    "redis-prefix": { type: "string", default: env.PORTICO_RATELIMIT_REDIS_PREFIX ?? "portico-rl:" },
    "redis-tls-ca": { type: "string", default: env.PORTICO_RATELIMIT_REDIS_TLS_CA },
    "redis-tls-cert": { type: "string", default: env.PORTICO_RATELIMIT_REDIS_TLS_CERT },
    "redis-tls-key": { type: "string", default: env.PORTICO_RATELIMIT_REDIS_TLS_KEY },
    "redis-tls-insecure": { type: "boolean", default: env.PORTICO_RATELIMIT_REDIS_TLS_INSECURE === "true" },
    "shadow-mode": { type: "boolean", default: env.PORTICO_RATELIMIT_SHADOW_MODE === "true" },
    "merge-domain-config": {
      type: "boolean",
      default: env.PORTICO_RATELIMIT_MERGE_DOMAIN_CONFIG === "true",
    },
    "near-limit-ratio": { type: "string", default: env.PORTICO_RATELIMIT_NEAR_LIMIT_RATIO ?? "0.8" },
    "limit-response-headers": {
      type: "boolean",
      default: env.PORTICO_RATELIMIT_LIMIT_RESPONSE_HEADERS === "true",
    },
    "limit-limit-header": {
      type: "string",
      default: env.PORTICO_RATELIMIT_LIMIT_LIMIT_HEADER ?? DEFAULT_LIMIT_HEADERS.limit,
    },
    "limit-remaining-header": {
      type: "string",
      default: env.PORTICO_RATELIMIT_LIMIT_REMAINING_HEADER ?? DEFAULT_LIMIT_HEADERS.remaining,
    },
    "limit-reset-header": {
      type: "string",
      default: env.PORTICO_RATELIMIT_LIMIT_RESET_HEADER ?? DEFAULT_LIMIT_HEADERS.reset,
    },
    "max-connection-age-ms": { type: "string", default: env.PORTICO_RATELIMIT_MAX_CONNECTION_AGE_MS },
    "max-connection-age-grace-ms": {
      type: "string",
      default: env.PORTICO_RATELIMIT_MAX_CONNECTION_AGE_GRACE_MS,
    },
    "tls-cert": { type: "string", default: env.PORTICO_RATELIMIT_TLS_CERT },
    "tls-key": { type: "string", default: env.PORTICO_RATELIMIT_TLS_KEY },
    "tls-client-ca": { type: "string", default: env.PORTICO_RATELIMIT_TLS_CLIENT_CA },
    xds: { type: "string", default: env.PORTICO_RATELIMIT_XDS },
    "xds-protocol": { type: "string", default: env.PORTICO_RATELIMIT_XDS_PROTOCOL ?? "sotw" },
    "xds-tls-ca": { type: "string", default: env.PORTICO_RATELIMIT_XDS_TLS_CA },
    "xds-tls-cert": { type: "string", default: env.PORTICO_RATELIMIT_XDS_TLS_CERT },
    "xds-tls-key": { type: "string", default: env.PORTICO_RATELIMIT_XDS_TLS_KEY },
    "node-id": {
      type: "string",
      default: env.PORTICO_RATELIMIT_NODE_ID ?? `ratelimit-${os.hostname()}-${process.pid}`,
    },
  },
});

const log = createLogger("ratelimit-service");

function optionalPositive(what: "max-connection-age-ms" | "max-connection-age-grace-ms"): number | undefined {
  const text = values[what];
  return text === undefined || text === "" ? undefined : positiveFlag(text, what);
}

function ratio(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new Error(`--${what} must be from 0 to 1, got '${text}'`);
  return n;
}

/**
 * mTLS on the gRPC port, from all three `--tls-*` flags, or plaintext from none: only a gateway's
 * certificate from the internal CA may then call ShouldRateLimit, so no other workload can spend a
 * consumer's quota.
 */
function grpcTls(metrics: RateLimitMetrics) {
  return serviceTls(
    { cert: values["tls-cert"], key: values["tls-key"], clientCa: values["tls-client-ca"] },
    {
      envPrefix: "PORTICO_RATELIMIT_TLS_",
      logger: log,
      onRefused: (reason) => metrics.callsRefused.inc({ reason }),
    },
  );
}

function limitHeaderNames(): LimitHeaderNames | undefined {
  if (!values["limit-response-headers"]) return undefined;
  return {
    limit: values["limit-limit-header"]!,
    remaining: values["limit-remaining-header"]!,
    reset: values["limit-reset-header"]!,
  };
}

function backendOptions(registry: Registry): BackendOptions {
  if (values.backend === "memory") return { kind: "memory" };
  const connection = withRedisCredentials(parseRedisSpec(values.backend!), redisCredentialsFromEnv());
  // A password in the environment keeps it out of process listings.
  if (env.PORTICO_RATELIMIT_REDIS_PASSWORD) connection.password = env.PORTICO_RATELIMIT_REDIS_PASSWORD;
  if (values["redis-tls-ca"] || values["redis-tls-cert"] || values["redis-tls-insecure"]) {
    connection.tls = {
      ...connection.tls,
      ca: values["redis-tls-ca"],
      cert: values["redis-tls-cert"],
      key: values["redis-tls-key"],
      rejectUnauthorized: !values["redis-tls-insecure"],
    };
  }
  const mode = values.mode;
  if (mode !== "strict" && mode !== "local-first")
    throw new Error(`--mode must be strict or local-first, got '${mode}'`);
  const failureMode = values["failure-mode"]!.replace(/-/g, "_");
  if (!["local", "fail_open", "fail_closed"].includes(failureMode)) {
    throw new Error(
      `--failure-mode must be local, fail-open or fail-closed, got '${values["failure-mode"]}'`,
    );
  }
  const instances = values.instances === "auto" ? "auto" : positiveFlag(values.instances!, "instances");
  return {
    kind: "redis",
    connection,
    mode,
    log,
    registry,
    prefix: values["redis-prefix"],
    timeoutMs: positiveFlag(values["redis-timeout-ms"]!, "redis-timeout-ms"),
    failureMode: failureMode as FailureMode,
    instances,
    syncPeriodMs: positiveFlag(values["sync-period-ms"]!, "sync-period-ms"),
    syncHits: positiveFlag(values["sync-hits"]!, "sync-hits"),
    overLimitCacheKeys: cacheKeys(values["over-limit-cache-keys"]!),
  };
}

/** `--over-limit-cache-keys`: a whole number, 0 for no cache. */
function cacheKeys(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new Error(`--over-limit-cache-keys must be a whole number (0 turns the cache off), got '${text}'`);
  return n;
}

try {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const configPath = path.resolve(values.config!);
  // From the control plane (--xds), or from files.
  const xds = values.xds;
  if (xds) hostPortFlag(xds, "xds");
  const protocol = values["xds-protocol"];
  if (protocol !== "sotw" && protocol !== "delta")
    throw new Error(`--xds-protocol must be sotw or delta, got '${protocol}'`);
  const loadOptions = { mergeDomains: values["merge-domain-config"] };
  const config = xds ? undefined : loadConfig(configPath, loadOptions);
  const xdsTls = xds
    ? xdsClientTls({ ca: values["xds-tls-ca"], cert: values["xds-tls-cert"], key: values["xds-tls-key"] })
    : undefined;
  const metrics = new RateLimitMetrics(registry);
  const tls = grpcTls(metrics);
  const tracing = await tracingFromEnv("ratelimit-service", log);
  const limiter = createLimiter(backendOptions(registry));
  const { host, port } = hostPortFlag(values.listen!, "listen");
  const server = await startRateLimitService({
    config,
    limiter,
    host,
    port,
    log,
    metrics,
    shadowMode: values["shadow-mode"],
    nearLimitRatio: ratio(values["near-limit-ratio"]!, "near-limit-ratio"),
    limitHeaders: limitHeaderNames(),
    tls,
    maxConnectionAgeMs: optionalPositive("max-connection-age-ms"),
    maxConnectionAgeGraceMs: optionalPositive("max-connection-age-grace-ms"),
    tracing,
  });
  // Signals are handled from the moment the gRPC server listens: a SIGTERM from then on drains and
  // stops it, whatever else is still starting.
  let source: XdsConfigSource | undefined;
  let ops: OpsServer | undefined;
  stopOnSignals(log, [
    () => source?.close(),
    () => server.stop(),
    () => limiter.close(),
    () => ops?.close(),
    // Spans still buffered are sent before the process goes.
    () => tracing?.shutdown(),
  ]);
  if (!tls && !isLoopbackHost(host)) {
    log.warn(
      { listen: values.listen },
      "the gRPC port is plaintext beyond loopback: any process that reaches it can spend quotas; set --tls-cert, --tls-key and --tls-client-ca",
    );
  }
  if (xds) {
    // Until the first config arrives, health says NOT_SERVING and calls get UNAVAILABLE.
    source = new XdsConfigSource({
      target: xds,
      nodeId: values["node-id"]!,
      protocol,
      credentials: xdsTls?.credentials,
      log,
      onConfig: (c) => {
        server.setConfig(c);
        server.metrics.configUpdates.inc({ result: "accepted" });
      },
      onReject: () => server.metrics.configUpdates.inc({ result: "rejected" }),
    });
    log.info(
      { xds, node: values["node-id"], transport: xdsTls?.transport },
      "waiting for the rate-limit config from the control plane",
    );
  } else {
    log.info({ config: configPath, domains: [...config!.domains.keys()] }, "rate-limit config loaded");
  }

  if (values["metrics-listen"]) {
    const m = hostPortFlag(values["metrics-listen"], "metrics-listen");
    ops = await startOpsServer({
      host: m.host,
      port: m.port,
      registry,
      // Ready: a config to decide with, and the gRPC server answering (not stopping).
      readiness: () =>
        !server.ready
          ? "waiting for config"
          : server.health.get() !== "SERVING"
            ? "gRPC server not serving"
            : true,
    });
  }

  // A reload that fails keeps the running config: a typo never drops every limit.
  process.on("SIGHUP", () => {
    if (source) {
      log.info("SIGHUP ignored: the config comes from the control plane");
      return;
    }
    try {
      const next = loadConfig(configPath, loadOptions);
      server.setConfig(next);
      log.info({ config: configPath, domains: [...next.domains.keys()] }, "rate-limit config reloaded");
    } catch (err) {
      log.error(
        { err: (err as Error).message },
        "rate-limit config reload failed; keeping the running config",
      );
    }
  });
} catch (err) {
  log.fatal({ details: (err as { issues?: unknown }).issues }, (err as Error).message);
  process.exit(1);
}
