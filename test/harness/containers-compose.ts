/**
 * The `containers` backend: deploy/docker-compose.yml itself, run by testcontainers on the local
 * engine under a project name of its own and on free host ports, so it never meets a developer's
 * `docker-compose up` or another test run. Images are the local ones (build-offline.sh, cached by
 * a content hash, so a run with unchanged sources builds nothing).
 */
import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import { COMPOSE_PKI_DIR, type ProbeResult } from "@portico/deploy";
import { REPO_ROOT } from "@portico/envoy";
import type { GatewayStack } from "./containers.js";
import { DEPLOY_DIR, healthCheckedServices } from "./containers-compose-file.js";
import { freePorts } from "./ports.js";
import { waitFor } from "./wait.js";

const run = promisify(execFile);
const LOG_TAIL_LINES = 150;

const seconds = (since: number) => Math.round((Date.now() - since) / 100) / 10;

export async function startComposeStack(log: (line: string) => void): Promise<GatewayStack> {
  // No Ryuk (it is pulled from a registry); this backend removes its own project instead.
  process.env.TESTCONTAINERS_RYUK_DISABLED ??= "true";
  process.env.TESTCONTAINERS_HOST_OVERRIDE ??= "127.0.0.1";
  const { DockerComposeEnvironment, Wait } = await import("testcontainers");
  const timings: Record<string, number> = {};

  let t = Date.now();
  const build = await run("bash", [path.join(DEPLOY_DIR, "images/build-offline.sh")], {
    cwd: REPO_ROOT,
    timeout: 15 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  timings.images = seconds(t);
  log(`[stack] images: ${build.stdout.trim().split("\n").at(-1)}`);

  // Compose v1 keeps only [a-z0-9_-] of a project name.
  const project = `portico-e2e-${process.pid}-${randomBytes(3).toString("hex")}`;
  const [edgePort, bffWebPort, adminPort] = await freePorts(3);
  const adminToken = randomBytes(18).toString("hex");
  const env = {
    PORTICO_EDGE_HOST_PORT: String(edgePort),
    PORTICO_BFF_WEB_HOST_PORT: String(bffWebPort),
    PORTICO_ADMIN_HOST_PORT: String(adminPort),
    PORTICO_ADMIN_TOKEN: adminToken,
  };
  const composeEnv = { ...process.env, ...env, COMPOSE_PROJECT_NAME: project };
  const compose = (...args: string[]) =>
    run("docker-compose", ["-f", path.join(DEPLOY_DIR, "docker-compose.yml"), ...args], {
      cwd: DEPLOY_DIR,
      env: composeEnv,
      timeout: 120_000,
      maxBuffer: 32 * 1024 * 1024,
    });

  let stopped = false;
  // A worker killed by a timeout runs no afterAll: `down` on exit keeps the engine clean anyway.
  const downOnExit = () => {
    if (stopped) return;
    spawnSync(
      "docker-compose",
      ["-f", path.join(DEPLOY_DIR, "docker-compose.yml"), "down", "-v", "-t", "2"],
      { cwd: DEPLOY_DIR, env: composeEnv, stdio: "ignore", timeout: 60_000 },
    );
  };
  process.once("exit", downOnExit);

  const logs = async () => {
    try {
      const { stdout, stderr } = await compose("logs", "--no-color", `--tail=${LOG_TAIL_LINES}`);
      return stdout + stderr;
    } catch (err) {
      return `docker-compose logs failed: ${(err as Error).message}`;
    }
  };
  const stop = async () => {
    if (stopped) return;
    t = Date.now();
    try {
      await compose("down", "-v", "-t", "5");
    } finally {
      stopped = true;
      process.removeListener("exit", downOnExit);
      timings.down = seconds(t);
    }
  };

  t = Date.now();
  let environment = new DockerComposeEnvironment(DEPLOY_DIR, "docker-compose.yml")
    .withProjectName(project)
    .withEnvironment(env)
    // Debian ships Compose v1 (`docker-compose`), not the `docker compose` plugin.
    .withClientOptions({ executable: { standalone: true } })
    .withStartupTimeout(240_000);
  // Every service with a compose health check, Envoys included: testcontainers waits for each.
  for (const service of healthCheckedServices())
    environment = environment.withWaitStrategy(`${project}_${service}_1`, Wait.forHealthCheck());
  try {
    await environment.up();
  } catch (err) {
    // testcontainers has already taken the project down, so its logs are gone; name the cause.
    stopped = true;
    process.removeListener("exit", downOnExit);
    throw new Error(`docker-compose up failed: ${(err as Error).message}`);
  }
  timings.up = seconds(t);

  // A one-off container of the Portico image on the project's network, with one workload's PKI
  // volume; as root, which may read files that belong to any service's user.
  const probe = async (args: string[], as?: string): Promise<ProbeResult> => {
    const { stdout } = await run(
      "docker",
      [
        "run",
        "--rm",
        "--network",
        `${project}_default`,
        "--user",
        "0:0",
        ...(as ? ["-v", `${project}_pki-${as}:${COMPOSE_PKI_DIR}:ro`] : []),
        process.env.PORTICO_IMAGE ?? "portico/portico:dev",
        "deploy/dist/compose/security-probe.js",
        ...args,
      ],
      { timeout: 60_000 },
    );
    return JSON.parse(stdout.trim().split("\n").at(-1)!) as ProbeResult;
  };
  const stack: GatewayStack = {
    mode: "containers",
    edgeUrl: `http://127.0.0.1:${edgePort}`,
    bffWebUrl: `http://127.0.0.1:${bffWebPort}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    adminToken,
    timings,
    logs,
    stop,
    probe,
  };
  // Healthy Envoys have their config; a request through each gateway and its sidecar says the
  // whole path is wired.
  t = Date.now();
  try {
    await waitFor(
      async () => {
        const [edge, bff] = await Promise.all([
          fetch(`${stack.edgeUrl}/users/1`, { signal: AbortSignal.timeout(2000) }),
          fetch(`${stack.bffWebUrl}/web/users/1`, { signal: AbortSignal.timeout(2000) }),
        ]);
        return edge.status === 200 && bff.status === 200;
      },
      {
        what: "the edge and bff-web Envoys to route to the users service",
        timeoutMs: 90_000,
        intervalMs: 500,
      },
    );
  } catch (err) {
    log(`[stack] not ready; logs:\n${await logs()}`);
    await stop();
    throw err;
  }
  timings.ready = seconds(t);
  return stack;
}
