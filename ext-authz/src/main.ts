// ext-authz: Envoy's external authorization service for Portico. Wiring only; see README.md.
import { parseArgs } from "node:util";
import { collectDefaultMetrics } from "prom-client";
import {
  createLogger,
  hostPortFlag,
  stopOnSignals,
  startOpsServer,
  type OpsServer,
  tracingFromEnv,
  type RpcTracing,
  serviceTls,
  xdsClientTls,
} from "@portico/common";
import { Authorizer } from "./authorizer.js";
import { AuthzServer } from "./grpc/server.js";
import { AuthzMetrics } from "./metrics.js";
import { compilePolicy, type CompiledPolicy } from "./policy/compile.js";
import { formatPolicyError, isLoopbackHost } from "@portico/contract";
import { loadPolicyFile } from "./policy/load.js";
import { defaultNodeId, XdsPolicySource } from "./xds/policy-source.js";

const { values: flags } = parseArgs({
  options: {
    policy: { type: "string", default: process.env.PORTICO_AUTHZ_POLICY },
    xds: { type: "string", default: process.env.PORTICO_AUTHZ_XDS },
    "xds-protocol": { type: "string", default: process.env.PORTICO_AUTHZ_XDS_PROTOCOL ?? "delta" },
    "node-id": { type: "string", default: process.env.PORTICO_AUTHZ_NODE_ID },
    "xds-tls-ca": { type: "string", default: process.env.PORTICO_AUTHZ_XDS_TLS_CA },
    "xds-tls-cert": { type: "string", default: process.env.PORTICO_AUTHZ_XDS_TLS_CERT },
    "xds-tls-key": { type: "string", default: process.env.PORTICO_AUTHZ_XDS_TLS_KEY },
    listen: { type: "string", default: process.env.PORTICO_AUTHZ_LISTEN ?? "127.0.0.1:9191" },
    "tls-cert": { type: "string", default: process.env.PORTICO_AUTHZ_TLS_CERT },
    "tls-key": { type: "string", default: process.env.PORTICO_AUTHZ_TLS_KEY },
    "tls-client-ca": { type: "string", default: process.env.PORTICO_AUTHZ_TLS_CLIENT_CA },
    metrics: { type: "string", default: process.env.PORTICO_AUTHZ_METRICS ?? "127.0.0.1:9192" },
    "log-level": { type: "string", default: process.env.LOG_LEVEL ?? "info" },
    help: { type: "boolean", default: false },
  },
});

if (flags.help) {
  console.log(`usage: node ext-authz/dist/main.js [--policy FILE | --xds HOST:PORT] [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE --tls-client-ca FILE] [--metrics HOST:PORT|off] [--log-level LEVEL]

  --policy        static policy YAML (env PORTICO_AUTHZ_POLICY); without one (and without --xds)
                  every protected route answers 401
  --xds           the control plane's xDS address: the policy comes from it (env PORTICO_AUTHZ_XDS);
                  checks answer 503 and health says NOT_SERVING until the first policy arrives
  --xds-protocol  delta (default) or sotw (env PORTICO_AUTHZ_XDS_PROTOCOL)
  --node-id       node.id towards the control plane, unique per process
                  (env PORTICO_AUTHZ_NODE_ID, default ext-authz-<hostname>-<pid>)
  --xds-tls-ca    PEM CA of the control plane's certificate: xDS over TLS (env PORTICO_AUTHZ_XDS_TLS_CA)
  --xds-tls-cert  PEM client certificate and key, for a control plane that requires mTLS
  --xds-tls-key   (env PORTICO_AUTHZ_XDS_TLS_CERT, PORTICO_AUTHZ_XDS_TLS_KEY)
  --listen     gRPC address for Check and health (env PORTICO_AUTHZ_LISTEN, default 127.0.0.1:9191)
  --tls-cert, --tls-key, --tls-client-ca
               PEM certificate, key and internal CA for the gRPC port, all three or none
               (env PORTICO_AUTHZ_TLS_CERT, PORTICO_AUTHZ_TLS_KEY, PORTICO_AUTHZ_TLS_CLIENT_CA):
               callers need a client certificate from that CA naming a gateway
               (spiffe://portico/gateway/<group>); others are refused. Health answers any
               verified client. Without them, plaintext.
  --metrics    address of /metrics (Prometheus), /healthz and /readyz, or off
               (env PORTICO_AUTHZ_METRICS, default 127.0.0.1:9192)
  --log-level  pino level (env LOG_LEVEL, default info)

Tracing: set OTEL_EXPORTER_OTLP_ENDPOINT (OTLP over gRPC, e.g. http://collector:4317); each Check
then gets a span, the child of Envoy's. Off when unset.

SIGHUP reloads the policy file; a policy that does not validate is refused and the old one kept.`);
  process.exit(0);
}

if (flags.policy && flags.xds) {
  console.error("give --policy or --xds, not both");
  process.exit(2);
}
if (flags["xds-protocol"] !== "delta" && flags["xds-protocol"] !== "sotw") {
  console.error(`--xds-protocol must be delta or sotw, not ${flags["xds-protocol"]}`);
  process.exit(2);
}

const log = createLogger("ext-authz", flags["log-level"]);

// Read before anything listens, so a bad file stops the start with its name.
let xdsTls: ReturnType<typeof xdsClientTls>;
try {
  xdsTls = xdsClientTls({ ca: flags["xds-tls-ca"], cert: flags["xds-tls-cert"], key: flags["xds-tls-key"] });
} catch (err) {
  log.fatal({ err: (err as Error).message }, "cannot start: the xDS TLS settings are not usable");
  process.exit(2);
}
const metrics = new AuthzMetrics();
let grpcTls: ReturnType<typeof serviceTls>;
try {
  grpcTls = serviceTls(
    { cert: flags["tls-cert"], key: flags["tls-key"], clientCa: flags["tls-client-ca"] },
    {
      envPrefix: "PORTICO_AUTHZ_TLS_",
      logger: log,
      onRefused: (reason) => metrics.callsRefused.inc({ reason }),
      onLogDropped: () => metrics.logsDropped.inc(),
    },
  );
} catch (err) {
  log.fatal({ err: (err as Error).message }, "cannot start: the gRPC TLS settings are not usable");
  process.exit(2);
}

async function readPolicy(): Promise<CompiledPolicy> {
  if (!flags.policy) {
    log.warn("no --policy given: no providers, so every protected route answers 401");
    const empty = compilePolicy({});
    if (!empty.ok) throw new Error(formatPolicyError(empty.error));
    return empty.value;
  }
  const loaded = await loadPolicyFile(flags.policy);
  if (!loaded.ok) throw new Error(formatPolicyError(loaded.error));
  return loaded.value;
}

// Over xDS the policy arrives after start; until then checks fail closed.
let policy: CompiledPolicy | undefined;
if (!flags.xds) {
  try {
    policy = await readPolicy();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, "cannot start: the policy is not usable");
    process.exit(1);
  }
}

collectDefaultMetrics({ register: metrics.registry });
let tracing: RpcTracing | undefined;
try {
  tracing = await tracingFromEnv("ext-authz", log);
} catch (err) {
  log.fatal({ err: (err as Error).message }, "cannot start: the tracing settings are not usable");
  process.exit(2);
}
let authorizer: Authorizer;
try {
  authorizer = new Authorizer({ policy, metrics, logger: log });
} catch (err) {
  log.fatal({ err: (err as Error).message }, "cannot start");
  process.exit(1);
}
await authorizer.warm();
const server = new AuthzServer({ authorizer, address: flags.listen!, logger: log, tracing, tls: grpcTls });
// Signals are handled before the service says it serves: a SIGTERM from then on drains and stops it.
let source: XdsPolicySource | undefined;
let ops: OpsServer | undefined;
const shutdown = stopOnSignals(log, [
  () => source?.close(),
  () => server.stop(),
  () => ops?.close(),
  // Spans still buffered are sent before the process goes.
  () => tracing?.shutdown(),
]);
const port = await server.start();
log.info(
  {
    listen: flags.listen,
    port,
    transport: grpcTls ? grpcTls.transport : "plaintext",
    revision: policy?.revision,
    policy: flags.policy,
    xds: flags.xds,
    xdsTransport: flags.xds ? xdsTls.transport : undefined,
  },
  "ext-authz serving",
);
/** Whether a listen address reaches beyond this host (a unix socket or an odd form: assume not). */
function beyondLoopback(listen: string): boolean {
  try {
    return !isLoopbackHost(hostPortFlag(listen, "listen").host);
  } catch {
    return false;
  }
}
if (!grpcTls && beyondLoopback(flags.listen!)) {
  log.warn(
    { listen: flags.listen },
    "the gRPC port is plaintext beyond loopback: any process that reaches it can call Check; set --tls-cert, --tls-key and --tls-client-ca",
  );
}

if (flags.xds) {
  source = new XdsPolicySource({
    credentials: xdsTls.credentials,
    target: flags.xds,
    nodeId: flags["node-id"] ?? defaultNodeId(),
    protocol: flags["xds-protocol"],
    authorizer,
    logger: log,
  });
  source.on("ready", () => {
    if (!shutdown.stopping) server.health.set("SERVING");
  });
}

if (flags.metrics && flags.metrics !== "off") {
  const { host, port: opsPort } = hostPortFlag(flags.metrics, "metrics");
  ops = await startOpsServer({
    host,
    port: opsPort,
    registry: metrics.registry,
    // Ready: a policy to decide with, and the gRPC server answering (not stopping).
    readiness: () =>
      !authorizer.ready
        ? "no policy yet"
        : server.health.get() !== "SERVING"
          ? "gRPC server not serving"
          : true,
  });
  log.info({ metrics: flags.metrics }, "/metrics, /healthz and /readyz serving");
}

process.on("SIGHUP", () => {
  if (source) {
    log.info("SIGHUP ignored: the policy comes over xDS");
    return;
  }
  readPolicy()
    .then(async (next) => {
      authorizer.setPolicy(next);
      await authorizer.warm();
      log.info({ revision: next.revision }, "policy reloaded");
    })
    .catch((err: Error) =>
      log.error({ err: err.message }, "policy reload refused; the previous policy stays"),
    );
});
