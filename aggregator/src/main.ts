import os from "node:os";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { collectDefaultMetrics, Registry } from "prom-client";
import {
  createLogger,
  hostPortFlag,
  positiveFlag,
  redisCredentialsFromEnv,
  stopOnSignals,
  xdsClientTls,
} from "@portico/common";
import { fetchCaller } from "./compose/call.js";
import { MemoryStaleStore, RedisStaleStore, type StaleStore } from "./compose/stale.js";
import { loadConfigFile } from "./config/file.js";
import { formatProblems } from "@portico/contract";
import { XdsConfigSource } from "./config/xds-source.js";
import { AggregatorServer } from "./http/server.js";
import { AggregatorMetrics } from "./metrics.js";

const env = process.env;
const { values } = parseArgs({
  options: {
    config: { type: "string", short: "c", default: env.PORTICO_AGGREGATOR_CONFIG },
    xds: { type: "string", default: env.PORTICO_AGGREGATOR_XDS },
    "xds-protocol": { type: "string", default: env.PORTICO_AGGREGATOR_XDS_PROTOCOL ?? "sotw" },
    "xds-tls-ca": { type: "string", default: env.PORTICO_AGGREGATOR_XDS_TLS_CA },
    "xds-tls-cert": { type: "string", default: env.PORTICO_AGGREGATOR_XDS_TLS_CERT },
    "xds-tls-key": { type: "string", default: env.PORTICO_AGGREGATOR_XDS_TLS_KEY },
    "node-id": {
      type: "string",
      default: env.PORTICO_AGGREGATOR_NODE_ID ?? `aggregator-${os.hostname()}-${process.pid}`,
    },
    listen: { type: "string", default: env.PORTICO_AGGREGATOR_LISTEN ?? "127.0.0.1:8090" },
    "parts-host": { type: "string", default: env.PORTICO_AGGREGATOR_PARTS_HOST },
    redis: { type: "string", default: env.PORTICO_AGGREGATOR_REDIS },
    "redis-timeout-ms": { type: "string", default: env.PORTICO_AGGREGATOR_REDIS_TIMEOUT_MS ?? "50" },
    "max-part-bytes": { type: "string", default: env.PORTICO_AGGREGATOR_MAX_PART_BYTES ?? "4194304" },
  },
});

const log = createLogger("aggregator");

try {
  if (!values.config === !values.xds) throw new Error("give either --config <file> or --xds <host:port>");
  const protocol = values["xds-protocol"];
  if (protocol !== "sotw" && protocol !== "delta")
    throw new Error(`--xds-protocol must be sotw or delta, got '${protocol}'`);
  const xdsTls = values.xds
    ? xdsClientTls({ ca: values["xds-tls-ca"], cert: values["xds-tls-cert"], key: values["xds-tls-key"] })
    : undefined;
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const metrics = new AggregatorMetrics(registry);
  const stale: StaleStore = values.redis
    ? new RedisStaleStore({
        // The URL's own credentials, if any, win over the environment's.
        redis: new Redis(values.redis, {
          ...redisCredentialsFromEnv(),
          maxRetriesPerRequest: 1,
          enableOfflineQueue: false,
        }),
        timeoutMs: positiveFlag(values["redis-timeout-ms"]!, "redis-timeout-ms", true),
        onError: (op, err) => {
          metrics.staleStoreErrors.inc({ op });
          log.warn({ op, err: err.message }, "stale store call failed; answering without it");
        },
      })
    : new MemoryStaleStore();
  const { host, port } = hostPortFlag(values.listen!, "listen");
  const server = new AggregatorServer({
    host,
    port,
    log,
    registry,
    metrics,
    stale,
    caller: fetchCaller(positiveFlag(values["max-part-bytes"]!, "max-part-bytes", true)),
  });

  let source: XdsConfigSource | undefined;
  if (values.xds) {
    hostPortFlag(values.xds, "xds");
    // Until the first config arrives, /readyz says 503 and composite calls get 404.
    source = new XdsConfigSource({
      target: values.xds,
      nodeId: values["node-id"]!,
      protocol,
      credentials: xdsTls?.credentials,
      partsHost: values["parts-host"],
      log,
      onConfig: (c) => {
        metrics.configUpdates.inc({ result: "accepted" });
        server.setConfig(c);
      },
      onReject: () => metrics.configUpdates.inc({ result: "rejected" }),
    });
  } else {
    const compiled = loadConfigFile(values.config!);
    if (!compiled.ok) throw new Error(`${values.config}: ${formatProblems(compiled.problems)}`);
    server.setConfig(compiled.value);
    metrics.configUpdates.inc({ result: "accepted" });
  }
  const bound = await server.start();
  log.info(
    {
      listen: `${host}:${bound}`,
      xds: values.xds,
      xdsTransport: xdsTls?.transport,
      node: values["node-id"],
      config: values.config,
    },
    "aggregator listening",
  );

  stopOnSignals(log, [() => source?.close(), () => server.stop(), () => stale.close()]);
} catch (err) {
  log.fatal((err as Error).message);
  process.exit(1);
}
