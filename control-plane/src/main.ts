import { parseArgs } from "node:util";
import { createLogger, stopOnSignals } from "@portico/common";
import { hashToken, TokenRegistry, type TokenRecord } from "./admin/auth.js";
import { startControlPlane } from "./control-plane.js";
import { startIdleRelease } from "./idle-release.js";

const env = process.env;
const { values } = parseArgs({
  options: {
    store: { type: "string", default: env.PORTICO_STORE ?? "file:.portico/store" },
    config: { type: "string", short: "c", default: env.PORTICO_CONFIG },
    watch: { type: "boolean", default: env.PORTICO_WATCH_CONFIG === "true" },
    "xds-host": { type: "string", default: env.PORTICO_XDS_HOST ?? "127.0.0.1" },
    "xds-port": { type: "string", default: env.PORTICO_XDS_PORT ?? "18000" },
    "xds-tls-cert": { type: "string", default: env.PORTICO_XDS_TLS_CERT },
    "xds-tls-key": { type: "string", default: env.PORTICO_XDS_TLS_KEY },
    "xds-tls-client-ca": { type: "string", default: env.PORTICO_XDS_TLS_CLIENT_CA },
    "xds-insecure": { type: "boolean", default: env.PORTICO_XDS_INSECURE === "true" },
    "admin-host": { type: "string", default: env.PORTICO_ADMIN_HOST ?? "127.0.0.1" },
    "admin-port": { type: "string", default: env.PORTICO_ADMIN_PORT ?? "9000" },
    "tokens-file": { type: "string", default: env.PORTICO_TOKENS_FILE ?? ".portico/tokens.json" },
    "auto-rollback": { type: "boolean", default: env.PORTICO_AUTO_ROLLBACK === "true" },
    "validate-with-envoy": { type: "boolean", default: env.PORTICO_VALIDATE_WITH_ENVOY === "true" },
    "debounce-ms": { type: "string", default: env.PORTICO_DEBOUNCE_MS ?? "100" },
    "secrets-key-file": { type: "string", default: env.PORTICO_SECRETS_KEY_FILE },
    "idle-release": { type: "string", default: env.PORTICO_IDLE_RELEASE ?? "on" },
  },
});

const log = createLogger("control-plane");

// The stores read the secrets key's file from the environment: the flag is one more way to name it.
if (values["secrets-key-file"]) env.PORTICO_SECRETS_KEY_FILE = values["secrets-key-file"];

// Tokens given in the environment (containers, CI) take the place of the tokens file.
const envTokens: TokenRecord[] = [];
if (env.PORTICO_ADMIN_TOKEN)
  envTokens.push({ name: "admin", role: "admin", sha256: hashToken(env.PORTICO_ADMIN_TOKEN) });
if (env.PORTICO_READ_TOKEN)
  envTokens.push({ name: "read", role: "read", sha256: hashToken(env.PORTICO_READ_TOKEN) });
try {
  const cert = values["xds-tls-cert"];
  const key = values["xds-tls-key"];
  const clientCa = values["xds-tls-client-ca"];
  if (Boolean(cert) !== Boolean(key))
    throw new Error("--xds-tls-cert and --xds-tls-key go together: give both to serve xDS over TLS");
  if (values["idle-release"] !== "on" && values["idle-release"] !== "off")
    throw new Error(`--idle-release (PORTICO_IDLE_RELEASE): "on" or "off", not "${values["idle-release"]}"`);
  if (clientCa && !cert)
    throw new Error("--xds-tls-client-ca (mTLS) needs --xds-tls-cert and --xds-tls-key, the server's own");
  // Sampling starts before the start-up's own busy spell (reading and translating the config).
  const idle =
    values["idle-release"] === "on"
      ? startIdleRelease((r) =>
          log.debug(
            { freedMiB: Math.round((r.rssBefore - r.rssAfter) / 1048576), ms: Math.round(r.ms) },
            "returned memory after a busy spell",
          ),
        )
      : undefined;
  const cp = await startControlPlane({
    store: values.store,
    configFile: values.config,
    watchConfig: values.watch,
    xdsHost: values["xds-host"],
    xdsPort: Number(values["xds-port"]),
    xdsTls: cert && key ? { cert, key, clientCa } : undefined,
    xdsInsecure: values["xds-insecure"],
    adminHost: values["admin-host"],
    adminPort: Number(values["admin-port"]),
    tokensFile: values["tokens-file"],
    tokens: envTokens.length > 0 ? new TokenRegistry(envTokens) : undefined,
    autoRollback: values["auto-rollback"],
    validateWithEnvoy: values["validate-with-envoy"],
    debounceMs: Number(values["debounce-ms"]),
    log,
    defaultMetrics: true,
  });
  if (cp.createdToken) {
    // Shown once, on the terminal and never in the log: only its hash is kept.
    process.stderr.write(
      `\nCreated an admin token (its hash is in ${values["tokens-file"]}):\n\n  ${cp.createdToken}\n\n` +
        "Keep it now: it will not be shown again.\n\n",
    );
    log.warn({ tokensFile: values["tokens-file"] }, "created an admin token, shown once on stderr");
  }
  stopOnSignals(
    log,
    [() => idle?.stop(), () => cp.stop()],
    "shutting down: ending xDS streams so Envoys reconnect elsewhere",
  );
} catch (err) {
  const e = err as Error & { details?: unknown };
  log.fatal({ details: e.details }, e.message);
  process.exit(1);
}
