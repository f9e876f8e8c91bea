import type http from "node:http";
import { collectDefaultMetrics, Registry } from "prom-client";
import { createLogger, type Logger } from "../../common/src/log.js";
import { opsApp } from "./admin/ops.js";
import { FileConfigSource } from "./config/file-source.js";
import { Publisher } from "./config/publish.js";
import type { ConfigError } from "./model/errors.js";
import { XdsMetrics } from "./xds/metrics.js";
import { XdsServer } from "./xds/server.js";

export interface ControlPlaneOptions {
  configFile: string;
  xdsHost?: string;
  xdsPort?: number;
  adminHost?: string;
  adminPort?: number;
  log?: Logger;
  /** Let through configs that only Envoy can refuse, to exercise NACK handling; never in production. */
  skipSemanticChecks?: boolean;
  /** Hold-off after a config file change; default 100 ms. */
  debounceMs?: number;
  /** Process-wide metrics (CPU, memory, event loop); off in tests that start several. */
  defaultMetrics?: boolean;
}

export interface ControlPlane {
  xds: XdsServer;
  publisher: Publisher;
  source: FileConfigSource;
  xdsPort: number;
  adminPort: number;
  registry: Registry;
  stop(): Promise<void>;
}

/** Starts the control plane: file config source → translator → snapshot cache → xDS, plus ops HTTP. */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log ?? createLogger("control-plane");
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const metrics = new XdsMetrics(registry);
  const xds = new XdsServer({ log, metrics });
  const publisher = new Publisher(xds.cache, log, metrics);
  let lastRejected: ConfigError | undefined;
  const source = new FileConfigSource({
    file: opts.configFile,
    log,
    debounceMs: opts.debounceMs,
    skipSemanticChecks: opts.skipSemanticChecks,
    onConfig: (config) => {
      publisher.publish(config);
      lastRejected = undefined;
    },
    onError: (err) => {
      lastRejected = err;
    },
  });
  publisher.publish(source.load());
  source.watch();

  const xdsPort = await xds.listen(opts.xdsHost ?? "127.0.0.1", opts.xdsPort ?? 18000);
  const app = opsApp({
    registry,
    fleet: xds.fleet,
    ready: () => publisher.current !== undefined,
    configState: () => ({
      revision: publisher.current?.revision,
      file: opts.configFile,
      lastRejected: lastRejected?.toJSON(),
    }),
  });
  const server = await new Promise<http.Server>((resolve, reject) => {
    const s = app.listen(opts.adminPort ?? 9000, opts.adminHost ?? "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
  const address = server.address();
  const adminPort = typeof address === "object" && address ? address.port : 0;
  log.info({ adminPort }, "ops HTTP listening");

  return {
    xds,
    publisher,
    source,
    xdsPort,
    adminPort,
    registry,
    async stop() {
      source.close();
      await xds.close(2_000);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
    },
  };
}
