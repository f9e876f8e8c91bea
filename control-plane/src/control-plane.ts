import http from "node:http";
import express from "express";
import { collectDefaultMetrics, Registry } from "prom-client";
import { createLogger, type Logger, xdsServerTls, type XdsServerTlsFiles } from "@portico/common";
import { apiRouter } from "./admin/api.js";
import { requireToken, TokenRegistry } from "./admin/auth.js";
import { ConfigService } from "./admin/config-service.js";
import { errorHandler, HttpError } from "./admin/http-error.js";
import { openApiDocument } from "./admin/openapi.js";
import { FileConfigSource } from "./config/file-source.js";
import { Publisher } from "./config/publish.js";
import { GroupMembership } from "./fleet/membership.js";
import { JwksKeeper } from "./jwks/keeper.js";
import { routeAuthStatus } from "./jwks/route-status.js";
import { UsageCounting, usageLedgerFor } from "./quota/index.js";
import { FleetSharing } from "./fleet/sharing.js";
import { openStore, RedisStore } from "./store/index.js";
import type { ConfigStore } from "./store/types.js";
import { envoyValidator } from "./config/envoy-validate.js";
import { checkXdsExposure } from "./xds/exposure.js";
import { XdsMetrics } from "./xds/metrics.js";
import { XdsServer } from "./xds/server.js";

export interface ControlPlaneOptions {
  /** `file:<dir>` (default `file:.portico/store`), `redis://…`, or an opened store. */
  store?: string | ConfigStore;
  /** A YAML config: committed when the store is empty, or on every change with `watchConfig`. */
  configFile?: string;
  /**
   * The file is the source of truth: its content is committed at start and whenever it changes,
   * and admin API writes are refused (409), since the file's next edit would undo them.
   */
  watchConfig?: boolean;
  /** How the config file is named to people, when `configFile` is a copy made from the one they edit. */
  configFileShownAs?: string;
  xdsHost?: string;
  xdsPort?: number;
  /**
   * Serve xDS over TLS (PEM files). With `clientCa` (mTLS), clients must present a certificate it
   * signed, naming a Portico workload identity, and each is served only what that identity may read.
   */
  xdsTls?: XdsServerTlsFiles;
  /**
   * Serve xDS without client certificates on a non-loopback `xdsHost`; refused at start otherwise,
   * since anyone reaching the port could read every gateway's keys.
   */
  xdsInsecure?: boolean;
  adminHost?: string;
  adminPort?: number;
  /** Time a client has to send its request headers (default 10 s) and its whole request (30 s). */
  adminHeadersTimeoutMs?: number;
  adminRequestTimeoutMs?: number;
  /** Admin bearer tokens; default: the file `.portico/tokens.json`, created with a new admin token. */
  tokens?: TokenRegistry;
  tokensFile?: string;
  /** Roll back to the last revision the whole fleet accepted when a node refuses a config. */
  autoRollback?: boolean;
  /** Run `envoy --mode validate` on the translated config before committing it. */
  validateWithEnvoy?: boolean;
  /** Let through configs that only Envoy can refuse, to exercise NACK handling; never in production. */
  skipSemanticChecks?: boolean;
  /** Hold-off after a config file change; default 100 ms. */
  debounceMs?: number;
  /**
   * Quiet time after an Envoy joins or leaves its gateway group before the limits the group's
   * Envoys count are divided again and pushed; default 1 s (at most 5 s into a busy spell).
   */
  membershipDebounceMs?: number;
  /** The clock calendar quotas counted from access logs go by (periods, denies); default Date.now. */
  quotaClock?: () => number;
  /**
   * CA certificates (PEM text) trusted for providers' JWKS endpoints besides the system's; a
   * process can also name a file in NODE_EXTRA_CA_CERTS.
   */
  jwksCa?: string;
  log?: Logger;
  /** Process-wide metrics (CPU, memory, event loop); off in tests that start several. */
  defaultMetrics?: boolean;
}

export interface ControlPlane {
  xds: XdsServer;
  publisher: Publisher;
  service: ConfigService;
  store: ConfigStore;
  /** Calendar quotas counted from access logs, and the denies in force. */
  usage: UsageCounting;
  /** The signing keys fetched for JWT providers that publish them, which Envoy verifies with. */
  jwks: JwksKeeper;
  xdsPort: number;
  adminPort: number;
  registry: Registry;
  /** The plaintext of an admin token created at this start, shown once. */
  createdToken?: string;
  stop(): Promise<void>;
}

/** How far back the status looks for the revision number of a config hash a node applied. */
const HISTORY_FOR_STATUS = 50;

/** Config hash → the newest revision number with that content (a rollback repeats a hash). */
function revisionNumbers(history: { number: number; hash: string }[]): Map<string, number> {
  const numbers = new Map<string, number>();
  for (const r of history)
    if (!numbers.has(r.hash) || numbers.get(r.hash)! < r.number) numbers.set(r.hash, r.number);
  return numbers;
}

/**
 * Wires the control plane: store → (translate, snapshot) → xDS, and the admin HTTP API on top of
 * the store. Writes from this replica and from others (Redis) take the same path to the fleet.
 */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log ?? createLogger("control-plane");
  // Files are read before anything listens, so a bad path stops the start with its name.
  const tls = opts.xdsTls ? xdsServerTls(opts.xdsTls) : undefined;
  const xdsTransport = tls?.transport ?? "plaintext";
  const xdsHost = opts.xdsHost ?? "127.0.0.1";
  const exposure = checkXdsExposure({ host: xdsHost, transport: xdsTransport, insecure: opts.xdsInsecure });
  if (!exposure.ok) throw new Error(exposure.message);
  const registry = new Registry();
  if (opts.defaultMetrics) collectDefaultMetrics({ register: registry });
  const metrics = new XdsMetrics(registry);
  const xds = new XdsServer({
    log,
    metrics,
    credentials: tls?.credentials,
    authorizeClients: xdsTransport === "mtls",
  });
  // Limits each Envoy counts are divided among its group's connected Envoys, on every replica alike.
  const membership = new GroupMembership({
    fleet: xds.fleet,
    quietMs: opts.membershipDebounceMs,
    onChange: () => {
      try {
        publisher.refresh();
      } catch (err) {
        log.error(
          { err: (err as Error).message },
          "could not divide the limits again after a membership change",
        );
      }
    },
  });
  // Keys fetched (or rotated) publish the config again: its JWT routes move to Envoy, or Envoy gets them.
  const jwks = new JwksKeeper({
    log,
    ca: opts.jwksCa,
    onChange: () => {
      try {
        publisher.republish();
      } catch (err) {
        log.error({ err: (err as Error).message }, "could not push the JWKS keys");
      }
    },
  });
  const publisher: Publisher = new Publisher(
    xds.cache,
    log,
    metrics,
    () => membership.counts(),
    () => usage.denies(),
    jwks,
  );
  const store = typeof opts.store === "object" ? opts.store : await openStore(opts.store ?? "", log);
  // Calendar quotas counted from the access logs Envoys stream over their xDS connection; a deny
  // (or its lifting) is pushed to the groups it concerns.
  const usageLedger = usageLedgerFor(store, log, opts.quotaClock);
  const usage: UsageCounting = new UsageCounting({
    ledger: usageLedger,
    log,
    registry,
    now: opts.quotaClock,
    config: () => publisher.current?.config,
    authorizeClients: xdsTransport === "mtls",
    onChange: () => {
      try {
        publisher.republish();
      } catch (err) {
        log.error({ err: (err as Error).message }, "could not push the quota denies");
      }
    },
  });
  const accessLogs = usage.service();
  xds.addService(accessLogs.definition, accessLogs.implementation);
  // Denies in force survive a restart: read before the first publish.
  await usage.start();
  const service = new ConfigService(store, publisher, xds.cache, xds.fleet, log, {
    skipSemanticChecks: opts.skipSemanticChecks,
    autoRollback: opts.autoRollback,
    validateWithEnvoy: opts.validateWithEnvoy ? await envoyValidator(log) : undefined,
  });

  let source: FileConfigSource | undefined;
  if (opts.configFile) {
    const shownAs = opts.configFileShownAs ?? opts.configFile;
    source = new FileConfigSource({
      file: opts.configFile,
      shownAs,
      log,
      debounceMs: opts.debounceMs,
      skipSemanticChecks: opts.skipSemanticChecks,
      apply: async (config, cause) => {
        const message = cause === "start" ? `loaded ${shownAs}` : `file ${shownAs} changed`;
        // The source validated it with the service's options.
        const result = await service.replace(config, { message, author: "file" });
        return { revision: result.revision.number, hash: result.revision.hash, changed: result.changed };
      },
    });
  }

  // Watch before reading the head, so a commit by another replica in between is not missed.
  // Replicas on the shared store answer for the whole fleet; the file store has one replica.
  const sharing =
    store instanceof RedisStore
      ? new FleetSharing({ board: store.fleetBoard(), fleet: xds.fleet, log })
      : undefined;
  await sharing?.start();

  const unwatch = store.watch((rev) => service.publish(rev));
  const head = await store.head();
  if (head) service.publish(head);
  if (source && (opts.watchConfig || !head)) await source.applyNow();
  // Ready once the store's state is loaded and published (an empty store is a valid state).
  let ready = true;
  if (source && opts.watchConfig) source.watch();

  let tokens = opts.tokens;
  let createdToken: string | undefined;
  if (!tokens) {
    const loaded = TokenRegistry.loadOrCreate(opts.tokensFile ?? ".portico/tokens.json");
    tokens = loaded.registry;
    createdToken = loaded.created;
  }

  const xdsPort = await xds.listen(xdsHost, opts.xdsPort ?? 18000);
  log[exposure.level](
    {
      transport: xdsTransport,
      host: xdsHost,
      ...(opts.xdsTls?.clientCa ? { clientCa: opts.xdsTls.clientCa } : {}),
    },
    exposure.message,
  );
  const app = express();
  app.disable("x-powered-by");
  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", (_req, res) => {
    res.status(ready ? 200 : 503).json({ status: ready ? "ready" : "shutting down" });
  });
  app.get("/metrics", async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  app.get("/openapi.json", (_req, res) => {
    res.json(openApiDocument());
  });
  app.use("/api/v1", requireToken(tokens));
  app.get("/api/v1/status", async (_req, res, next) => {
    try {
      const current = await service.head();
      const numberOf = revisionNumbers(await store.list(HISTORY_FOR_STATUS));
      const file = source?.state();
      res.json({
        config: {
          revision: current?.number ?? 0,
          hash: current?.hash,
          lastGoodRevision: service.lastGood,
          autoRollback: service.autoRollback,
          store: store.kind,
          ...(file ? { file } : {}),
          // The file's refusal while it is current, under the name it has always had.
          ...(file?.refused ? { lastRejectedFile: file.lastRefused } : {}),
        },
        ...(sharing ? { replica: sharing.replica, replicas: xds.fleet.replicas() } : {}),
        // Who verifies each route's callers (Envoy, or ext-authz and why), and the keys behind it.
        routes: routeAuthStatus(current?.config, jwks),
        jwks: jwks.status(),
        nodes: xds.fleet.list().map((n) => ({
          ...n,
          ...(n.appliedConfigRevision
            ? {
                appliedConfig: {
                  revision: numberOf.get(n.appliedConfigRevision) ?? null,
                  hash: n.appliedConfigRevision,
                },
              }
            : {}),
        })),
      });
    } catch (err) {
      next(err);
    }
  });
  app.use(
    "/api/v1",
    apiRouter({
      service,
      store,
      fleet: xds.fleet,
      watchedFile: source && opts.watchConfig ? source.state().path : undefined,
    }),
  );
  app.use((_req, _res, next) => next(new HttpError(404, "not_found", "no such endpoint")));
  app.use(errorHandler(log));

  // A client trickling its request slowly is cut off (408) rather than holding a socket forever;
  // the deadlines are checked every second, not Node's default 30 s.
  const headersTimeout = opts.adminHeadersTimeoutMs ?? 10_000;
  const server = http.createServer(
    {
      headersTimeout,
      requestTimeout: Math.max(opts.adminRequestTimeoutMs ?? 30_000, headersTimeout),
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
    },
    app,
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.adminPort ?? 9000, opts.adminHost ?? "127.0.0.1", () => resolve());
  });
  const address = server.address();
  const adminPort = typeof address === "object" && address ? address.port : 0;
  log.info({ adminPort, store: store.kind }, "admin API listening");

  return {
    xds,
    publisher,
    service,
    store,
    usage,
    jwks,
    xdsPort,
    adminPort,
    registry,
    createdToken,
    async stop() {
      ready = false;
      source?.close();
      unwatch();
      membership.stop();
      jwks.stop();
      await usage.stop();
      await xds.close(2_000);
      await usageLedger.close();
      await sharing?.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await store.close();
    },
  };
}
