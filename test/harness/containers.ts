/**
 * The whole gateway as deploy/docker-compose.yml describes it — Redis, the control plane with the
 * compose seed, ext-authz, the rate limiter, the aggregator, the edge and bff-web Envoys and two
 * sample services behind sidecar Envoys — behind one interface with two backends:
 *
 * - `containers`: the real compose file on a Docker engine, through testcontainers, with the
 *   locally built images (deploy/images/build-offline.sh);
 * - `native`: the same services and the same seed (hosts and ports rewritten to loopback) as
 *   local processes, for machines without an engine.
 *
 * The backend is chosen by `PORTICO_TEST_BACKEND=containers|native`, or else by whether an
 * engine and docker-compose answer. A forced `containers` that cannot run is an error, never a
 * silent switch; an automatic choice says why it picked native.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { ProbeResult } from "@portico/deploy";

const run = promisify(execFile);

export type StackMode = "containers" | "native";

export interface GatewayStack {
  readonly mode: StackMode;
  /** The edge gateway group's listener, e.g. http://127.0.0.1:10000. */
  readonly edgeUrl: string;
  /** The bff-web gateway group's listener. */
  readonly bffWebUrl: string;
  /** The control plane's admin API. */
  readonly adminUrl: string;
  readonly adminToken: string;
  /** Seconds each phase took (images, start, …), for the run's log. */
  readonly timings: Record<string, number>;
  /** The last lines of every service's log, for a failed test. */
  logs(): Promise<string>;
  /** Stops and removes everything it started, volumes included. Safe to call twice. */
  stop(): Promise<void>;
  /**
   * Runs deploy/compose/security-probe.js from inside the deployment's network, with arguments
   * as compose names them (`ext-authz:9191`, files under /etc/portico/pki): as a client with the
   * PKI files of `as` (a directory the `certs` service writes, e.g. `gateway-edge`) at
   * /etc/portico/pki, or with none.
   */
  probe(args: string[], as?: string): Promise<ProbeResult>;
}

export interface ModeChoice {
  mode: StackMode;
  /** Why this mode: the override, or what was found. */
  reason: string;
}

async function engineVersion(): Promise<string> {
  const { stdout } = await run("docker", ["version", "--format", "{{.Server.Version}}"], { timeout: 15_000 });
  return stdout.trim();
}

async function composeVersion(): Promise<string> {
  const { stdout } = await run("docker-compose", ["version", "--short"], { timeout: 15_000 });
  return stdout.trim();
}

/** Which backend this run uses, and why. */
export async function chooseStackMode(env: NodeJS.ProcessEnv = process.env): Promise<ModeChoice> {
  const forced = env.PORTICO_TEST_BACKEND;
  if (forced && forced !== "containers" && forced !== "native" && forced !== "auto")
    throw new Error(`PORTICO_TEST_BACKEND must be containers, native or auto, not '${forced}'`);
  if (forced === "native") return { mode: "native", reason: "PORTICO_TEST_BACKEND=native" };
  let found: string;
  try {
    found = `Docker ${await engineVersion()}, docker-compose ${await composeVersion()}`;
  } catch (err) {
    const why = (err as Error).message.split("\n")[0];
    if (forced === "containers")
      throw new Error(`PORTICO_TEST_BACKEND=containers, but no Docker engine or docker-compose: ${why}`);
    return { mode: "native", reason: `no Docker engine or docker-compose (${why})` };
  }
  return { mode: "containers", reason: forced === "containers" ? `forced; ${found}` : found };
}

export interface StartStackOptions {
  /** Printed with each phase; console.log by default. */
  log?: (line: string) => void;
}

/** Starts the stack with the chosen backend; the caller must `stop()` it (in afterAll). */
export async function startGatewayStack(
  choice: ModeChoice,
  opts: StartStackOptions = {},
): Promise<GatewayStack> {
  const log = opts.log ?? ((line: string) => console.log(line));
  if (choice.mode === "containers") {
    const { startComposeStack } = await import("./containers-compose.js");
    return startComposeStack(log);
  }
  const { startNativeStack } = await import("./containers-native.js");
  return startNativeStack(log);
}

/** The demo API key of deploy/compose/portico.yaml (a published key; only its hash is stored). */
export const DEMO_API_KEY = "pk_demo_portico_0000000000000000";
