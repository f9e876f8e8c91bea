import { parseArgs } from "node:util";
import { createLogger } from "../../common/src/log.js";
import { startControlPlane } from "./control-plane.js";

const { values } = parseArgs({
  options: {
    config: { type: "string", short: "c", default: process.env.PORTICO_CONFIG ?? "deploy/demo/portico.yaml" },
    "xds-host": { type: "string", default: process.env.PORTICO_XDS_HOST ?? "127.0.0.1" },
    "xds-port": { type: "string", default: process.env.PORTICO_XDS_PORT ?? "18000" },
    "admin-host": { type: "string", default: process.env.PORTICO_ADMIN_HOST ?? "127.0.0.1" },
    "admin-port": { type: "string", default: process.env.PORTICO_ADMIN_PORT ?? "9000" },
    "debounce-ms": { type: "string", default: process.env.PORTICO_DEBOUNCE_MS ?? "100" },
  },
});

const log = createLogger("control-plane");
try {
  const cp = await startControlPlane({
    configFile: values.config!,
    xdsHost: values["xds-host"],
    xdsPort: Number(values["xds-port"]),
    adminHost: values["admin-host"],
    adminPort: Number(values["admin-port"]),
    debounceMs: Number(values["debounce-ms"]),
    log,
    defaultMetrics: true,
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down: ending xDS streams so Envoys reconnect elsewhere");
    void cp.stop().then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
} catch (err) {
  const e = err as Error & { details?: unknown };
  log.fatal({ details: e.details }, e.message);
  process.exit(1);
}
