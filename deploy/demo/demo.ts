// The whole gateway on one machine with embedded defaults: the control plane (file store, no
// Redis) serving deploy/demo/portico.yaml as it is at start and after every edit, ext-authz, the
// rate limiter (memory backend) and the aggregator taking their policy from it over xDS, one Envoy
// of the `edge` group bootstrapped over ADS, and two sample upstreams. Everything runs compiled
// (`npm run demo` builds first), the services each with plain `node`; every port can be moved
// (ports.ts).
//
// "Portico demo is up" is printed once every service says it is ready, so the first request is
// already authorised and counted. Whatever stops the start (a port in use, no Python for the
// Envoy wheel, a service that exits) is one line saying what to do, after everything started so
// far has been stopped. SIGINT, SIGTERM and SIGHUP stop every process, and the demo exits once
// they have exited, so no port stays held.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import type http from "node:http";
import path from "node:path";
import { createLogger } from "@portico/common";
import {
  generateToken,
  hashToken,
  TokenRegistry,
  startControlPlane,
  type ControlPlane,
} from "@portico/control-plane";
import { renderBootstrap, REPO_ROOT } from "@portico/envoy";
import { EXT_AUTHZ_NODE_ARGS } from "@portico/ext-authz/runtime";
import { RATELIMIT_NODE_ARGS } from "@portico/ratelimit-service/runtime";
import { followFile, withDemoPorts } from "./config.js";
import { demoEnvoy } from "./envoy-binary.js";
import {
  checkPortsFree,
  DEMO_PORTS,
  demoPorts,
  isProblem,
  portOfError,
  portsTaken,
  type DemoPorts,
  type DemoProblem,
} from "./ports.js";
import { hasExited, serviceEntry, startNodeService, stopProcess } from "./processes.js";
import { waitUntilReady, type ReadinessCheck } from "./readiness.js";
import { startSampleUpstream } from "./sample-upstream.js";

const log = createLogger("demo");
const say = (line: string) => console.log(line);

/** What has been started so far, stopped in reverse order of need: Envoy first, the store last. */
const started: {
  envoy?: ChildProcess;
  services: { name: string; child: ChildProcess }[];
  controlPlane?: ControlPlane;
  upstreams: http.Server[];
  unfollow?: () => void;
} = { services: [], upstreams: [] };
let stopping = false;

async function stopAll(): Promise<void> {
  if (started.envoy) await stopProcess(started.envoy);
  await Promise.all(started.services.map((s) => stopProcess(s.child)));
  started.unfollow?.();
  await started.controlPlane?.stop();
  await Promise.all(started.upstreams.map((u) => new Promise((resolve) => u.close(resolve))));
}

async function exit(code: number, problem?: DemoProblem): Promise<never> {
  if (stopping) return new Promise<never>(() => {});
  stopping = true;
  if (problem) console.error(`demo: ${problem.message}`);
  else say("Stopping the demo…");
  await stopAll();
  process.exit(code);
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => void exit(0));

/** One line for what went wrong: a taken port by name and variable, else the error's message. */
function problemOf(err: unknown, ports: DemoPorts): DemoProblem {
  const port = portOfError(err, ports);
  if (port) return portsTaken([{ name: port, port: ports[port] }]);
  return { code: "start_failed", message: (err as Error).message.split("\n")[0] ?? String(err) };
}

function readinessChecks(ports: DemoPorts): ReadinessCheck[] {
  const at = (port: number, p: string) => `http://127.0.0.1:${port}${p}`;
  return [
    { name: "control plane", url: at(ports.admin, "/readyz") },
    { name: "ext-authz", url: at(ports.authzMetrics, "/readyz") },
    { name: "rate limiter", url: at(ports.ratelimitMetrics, "/readyz") },
    { name: "aggregator", url: at(ports.aggregator, "/readyz") },
    { name: "Envoy", url: at(ports.envoyAdmin, "/ready") },
  ];
}

function banner(ports: DemoPorts, adminToken: string, configName: string, seconds: number): string {
  const edge = `http://127.0.0.1:${ports.edge}`;
  const admin = `http://127.0.0.1:${ports.admin}`;
  const server = ports.admin === DEMO_PORTS.admin.port ? "" : `\n  export PORTICO_SERVER=${admin}`;
  return `
Portico demo is up: every service answered ready in ${seconds.toFixed(1)} s.
  curl ${edge}/hello          # routed by Envoy to the 'hello' upstream, as an anonymous caller
  curl -H 'x-api-key: pk_demo_portico_0000000000000000' ${edge}/echo/anything
                                             # authenticated by ext-authz: the upstream sees x-portico-consumer: demo
  curl -i ${edge}/echo/anything   # 401: /echo needs an API key
  curl -H 'x-api-key: pk_demo_portico_0000000000000000' ${edge}/home
                                             # one call, both upstreams in parallel, one JSON answer
  for i in 1 2 3; do curl -s -o /dev/null -w '%{http_code} ' ${edge}/hello; done
                                             # 200 200 429 in one second: anonymous callers get 2/s per IP (keys 5/s)

Admin API (token shown once): export PORTICO_TOKEN=${adminToken}${server}
  curl -H "Authorization: Bearer $PORTICO_TOKEN" ${admin}/api/v1/status   # Envoys, what they applied or refused
  npx portico get routes                     # the CLI
  curl ${admin}/metrics
Edit ${configName} and the change is live at once, or change routes through the
admin API (the file wins again on its next edit). Ctrl-C stops everything.
`;
}

async function main(): Promise<void> {
  const found = demoPorts();
  if (isProblem(found)) return exit(1, found);
  const { ports, moved } = found;
  const configFile = path.resolve(
    process.env.PORTICO_CONFIG ?? path.join(REPO_ROOT, "deploy/demo/portico.yaml"),
  );
  if (!fs.existsSync(configFile))
    return exit(1, { code: "no_config", message: `no config file at ${configFile} (PORTICO_CONFIG)` });
  const configName = path.relative(process.cwd(), configFile);
  const workDir = path.resolve(process.env.PORTICO_DEMO_DIR ?? path.join(REPO_ROOT, ".portico", "demo"));
  fs.mkdirSync(workDir, { recursive: true });

  const taken = await checkPortsFree(ports);
  if (taken) return exit(1, taken);
  const envoy = await demoEnvoy((line) => log.info(line));
  if (isProblem(envoy)) return exit(1, envoy);
  say(`Starting the Portico demo (Envoy ${envoy.version}, config ${configName})…`);
  const t0 = Date.now();

  try {
    for (const [name, port] of [
      ["hello", ports.hello],
      ["echo", ports.echo],
    ] as const)
      started.upstreams.push(await startSampleUpstream(name, port));

    // A fresh admin token per demo run, printed below; only its hash is held.
    const adminToken = generateToken();
    // The control plane watches the file itself, so `portico status` shows what it last applied
    // and refused. With ports moved it watches a copy with those ports, kept in step with the
    // file, and names the file in its status and answers.
    const watched = moved.size === 0 ? configFile : path.join(workDir, "portico.yaml");
    const copy = (text: string) => fs.writeFileSync(watched, withDemoPorts(text, ports, moved));
    if (watched !== configFile) copy(fs.readFileSync(configFile, "utf8"));
    started.controlPlane = await startControlPlane({
      store: `file:${path.join(workDir, "store")}`,
      configFile: watched,
      watchConfig: true,
      configFileShownAs: configName,
      tokens: new TokenRegistry([{ name: "demo", role: "admin", sha256: hashToken(adminToken) }]),
      xdsPort: ports.xds,
      adminPort: ports.admin,
      log: createLogger("control-plane"),
      defaultMetrics: true,
    }).catch((err: Error) => {
      throw new Error(`${configName} refused: ${err.message}`);
    });
    if (watched !== configFile) started.unfollow = followFile(configFile, copy);

    // A signal during the start stops what exists; no process is started after it.
    if (stopping) return;
    const xds = `127.0.0.1:${ports.xds}`;
    const services: [string, string, string[], readonly string[]][] = [
      [
        "ext-authz",
        "ext-authz",
        [`--listen=127.0.0.1:${ports.authz}`, `--metrics=127.0.0.1:${ports.authzMetrics}`],
        EXT_AUTHZ_NODE_ARGS,
      ],
      [
        "rate limiter",
        "ratelimit-service",
        [`--listen=127.0.0.1:${ports.ratelimit}`, `--metrics-listen=127.0.0.1:${ports.ratelimitMetrics}`],
        RATELIMIT_NODE_ARGS,
      ],
      ["aggregator", "aggregator", [`--listen=127.0.0.1:${ports.aggregator}`], []],
    ];
    const childEnv = { LOG_LEVEL: process.env.LOG_LEVEL ?? "warn" };
    for (const [name, pkg, args, nodeArgs] of services)
      started.services.push({
        name,
        child: startNodeService(serviceEntry(pkg), [`--xds=${xds}`, ...args], childEnv, nodeArgs),
      });

    const bootstrapFile = path.join(workDir, "envoy-edge.yaml");
    fs.writeFileSync(
      bootstrapFile,
      renderBootstrap({
        nodeId: "demo-edge-1",
        group: "edge",
        xdsHost: "127.0.0.1",
        xdsPort: ports.xds,
        adminPort: ports.envoyAdmin,
      }),
    );
    started.envoy = spawn(
      envoy.path,
      ["-c", bootstrapFile, "--disable-hot-restart", "--concurrency", "2", "-l", "error"],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    const running = [...started.services, { name: "Envoy", child: started.envoy }];
    for (const { name, child } of running) {
      child.on(
        "error",
        (err) => void exit(1, { code: "cannot_start", message: `${name} did not start: ${err.message}` }),
      );
      child.on("exit", (code, signal) => {
        if (!stopping)
          void exit(1, {
            code: "service_exited",
            message: `${name} exited (${signal ?? `code ${code}`}; its log is above), so the demo stops`,
          });
      });
    }

    const notReady = await waitUntilReady(readinessChecks(ports), {
      onReady: (name, ms) => say(`  ready: ${name} (${(ms / 1000).toFixed(1)} s)`),
      onWaiting: (pending) => say(`  waiting for ${pending.map((p) => `${p.name} (${p.last})`).join(", ")}`),
      failed: () => {
        const gone = running.find(({ child }) => hasExited(child));
        return gone
          ? { code: "service_exited", message: `${gone.name} exited before it was ready` }
          : undefined;
      },
    });
    if (notReady) return exit(1, notReady);
    say(banner(ports, adminToken, configName, (Date.now() - t0) / 1000));
  } catch (err) {
    return exit(1, problemOf(err, ports));
  }
}

await main();
