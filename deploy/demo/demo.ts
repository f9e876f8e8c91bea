// The whole gateway on one machine with embedded defaults: the control plane (file config,
// no Redis), one Envoy of the `edge` group bootstrapped over ADS, and two sample upstreams.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createLogger } from "../../common/src/log.js";
import { generateToken, hashToken, TokenRegistry } from "../../control-plane/src/admin/auth.js";
import { startControlPlane } from "../../control-plane/src/control-plane.js";
import { renderBootstrap } from "../../envoy/src/bootstrap.js";
import { findEnvoy, REPO_ROOT } from "../../envoy/src/find-envoy.js";
import { startSampleUpstream } from "./sample-upstream.js";

const configFile = path.resolve(
  process.env.PORTICO_CONFIG ?? path.join(REPO_ROOT, "deploy/demo/portico.yaml"),
);
const xdsPort = Number(process.env.PORTICO_XDS_PORT ?? 18000);
const adminPort = Number(process.env.PORTICO_ADMIN_PORT ?? 9000);
const envoyAdminPort = Number(process.env.ENVOY_ADMIN_PORT ?? 9901);

const log = createLogger("demo");
const envoy = await findEnvoy({ install: true, log: (m) => log.info(m) });
log.info({ path: envoy.path, source: envoy.source }, `envoy ${envoy.version}`);

const upstreams = await Promise.all([startSampleUpstream("hello", 8081), startSampleUpstream("echo", 8082)]);
// A fresh admin token per demo run, printed below; only its hash is held.
const adminToken = generateToken();
const workDir = path.join(REPO_ROOT, ".portico", "demo");
const cp = await startControlPlane({
  store: `file:${path.join(workDir, "store")}`,
  configFile,
  watchConfig: true,
  tokens: new TokenRegistry([{ name: "demo", role: "admin", sha256: hashToken(adminToken) }]),
  xdsPort,
  adminPort,
  log: createLogger("control-plane"),
  defaultMetrics: true,
});

fs.mkdirSync(workDir, { recursive: true });
const bootstrapFile = path.join(workDir, "envoy-edge.yaml");
fs.writeFileSync(
  bootstrapFile,
  renderBootstrap({
    nodeId: "demo-edge-1",
    group: "edge",
    xdsHost: "127.0.0.1",
    xdsPort: cp.xdsPort,
    adminPort: envoyAdminPort,
  }),
);
const proxy = spawn(
  envoy.path,
  ["-c", bootstrapFile, "--disable-hot-restart", "--concurrency", "2", "-l", "warn"],
  {
    stdio: ["ignore", "inherit", "inherit"],
  },
);

console.log(`
Portico demo is up.
  curl http://127.0.0.1:10000/hello          # routed by Envoy to the 'hello' upstream
  curl http://127.0.0.1:10000/echo/anything  # prefix rewritten, to the 'echo' upstream

Admin API (token shown once): export PORTICO_TOKEN=${adminToken}
  curl -H "Authorization: Bearer $PORTICO_TOKEN" http://127.0.0.1:${cp.adminPort}/api/v1/status   # Envoys, what they applied or refused
  npx portico get routes                     # the CLI (PORTICO_SERVER defaults to http://127.0.0.1:9000)
  curl http://127.0.0.1:${cp.adminPort}/metrics
Edit ${path.relative(process.cwd(), configFile)} and the change is live at once, or change routes through the
admin API (the file wins again on its next edit). Ctrl-C stops everything.
`);

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  proxy.kill("SIGTERM");
  await cp.stop();
  for (const u of upstreams) u.close();
  process.exit(code);
}
proxy.on("exit", (code) => {
  if (!stopping) {
    log.error({ code }, "envoy exited");
    void stop(1);
  }
});
process.on("SIGINT", () => void stop(0));
process.on("SIGTERM", () => void stop(0));
