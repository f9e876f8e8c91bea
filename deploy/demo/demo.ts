// The whole gateway on one machine with embedded defaults: the control plane (file config,
// no Redis), ext-authz, the rate limiter (memory backend) and the aggregator taking their policy
// from it over xDS, one Envoy of the `edge` group bootstrapped over ADS, and two sample upstreams.
// Everything runs compiled (`npm run demo` builds first), the services each with plain `node`.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createLogger } from "@portico/common";
import { generateToken, hashToken, TokenRegistry } from "@portico/control-plane";
import { startControlPlane } from "@portico/control-plane";
import { renderBootstrap } from "@portico/envoy";
import { findEnvoy, REPO_ROOT } from "@portico/envoy";
import { startSampleUpstream } from "./sample-upstream.js";

const configFile = path.resolve(
  process.env.PORTICO_CONFIG ?? path.join(REPO_ROOT, "deploy/demo/portico.yaml"),
);
const xdsPort = Number(process.env.PORTICO_XDS_PORT ?? 18000);
const adminPort = Number(process.env.PORTICO_ADMIN_PORT ?? 9000);
const envoyAdminPort = Number(process.env.ENVOY_ADMIN_PORT ?? 9901);

const log = createLogger("demo");
let stopping = false;
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

/** A Portico service as its own compiled process, as in production, taking its policy over xDS. */
function service(name: string, main: string, args: string[]): ChildProcess {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, main), ...args], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn" },
  });
  child.on("exit", (code) => {
    if (!stopping) log.error({ service: name, code }, "a service exited");
  });
  return child;
}
const xds = `127.0.0.1:${cp.xdsPort}`;
const services = [
  service("ext-authz", "ext-authz/dist/main.js", [
    "--xds",
    xds,
    "--listen",
    "127.0.0.1:9191",
    "--metrics",
    "127.0.0.1:9192",
  ]),
  service("ratelimit", "ratelimit-service/dist/main.js", [
    "--xds",
    xds,
    "--listen",
    "127.0.0.1:8090",
    "--metrics-listen",
    "127.0.0.1:6070",
  ]),
  service("aggregator", "aggregator/dist/main.js", ["--xds", xds, "--listen", "127.0.0.1:8083"]),
];

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
  curl http://127.0.0.1:10000/hello          # routed by Envoy to the 'hello' upstream, as 'anonymous'
  curl -H 'x-api-key: pk_demo_portico_0000000000000000' http://127.0.0.1:10000/echo/anything
                                             # authenticated by ext-authz: the upstream sees x-portico-consumer: demo
  curl -i http://127.0.0.1:10000/echo/anything   # 401: /echo needs an API key
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:10000/hello; done
                                             # 429 after the first two in a second: anonymous callers get 2/s per IP (keys 5/s)
  curl http://127.0.0.1:10000/home           # one call, both upstreams in parallel, one JSON answer

Admin API (token shown once): export PORTICO_TOKEN=${adminToken}
  curl -H "Authorization: Bearer $PORTICO_TOKEN" http://127.0.0.1:${cp.adminPort}/api/v1/status   # Envoys, what they applied or refused
  npx portico get routes                     # the CLI (PORTICO_SERVER defaults to http://127.0.0.1:9000)
  curl http://127.0.0.1:${cp.adminPort}/metrics
Edit ${path.relative(process.cwd(), configFile)} and the change is live at once, or change routes through the
admin API (the file wins again on its next edit). Ctrl-C stops everything.
`);

async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  proxy.kill("SIGTERM");
  for (const s of services) s.kill("SIGTERM");
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
