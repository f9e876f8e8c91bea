/**
 * What the tests read from deploy/docker-compose.yml itself, so both backends run what it says:
 * which Envoy serves which gateway group, and each service's health check.
 */
import fs from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { COMPOSE_ENVOYS } from "@portico/deploy";
import { REPO_ROOT } from "@portico/envoy";

export const DEPLOY_DIR = path.join(REPO_ROOT, "deploy");

export interface ComposeService {
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  healthcheck?: { test?: unknown };
}

export interface ComposeFile {
  services: Record<string, ComposeService>;
}

export function composeFile(): ComposeFile {
  return parse(fs.readFileSync(path.join(DEPLOY_DIR, "docker-compose.yml"), "utf8"), {
    merge: true,
  }) as ComposeFile;
}

/** Compose service name → gateway group, from the Envoy bootstraps each service mounts. */
export function composeEnvoyGroups(): Map<string, { group: string; nodeId: string }> {
  const compose = composeFile();
  const out = new Map<string, { group: string; nodeId: string }>();
  for (const [name, svc] of Object.entries(compose.services)) {
    for (const volume of svc.volumes ?? []) {
      const e = COMPOSE_ENVOYS.find((x) => volume.startsWith(`./compose/${x.file}:`));
      if (e) out.set(name, { group: e.group, nodeId: e.nodeId });
    }
  }
  return out;
}

/** The services compose health-checks: what a start waits for before it is ready. */
export function healthCheckedServices(): string[] {
  return Object.entries(composeFile().services)
    .filter(([, svc]) => svc.healthcheck?.test !== undefined)
    .map(([name]) => name);
}

/**
 * The health check compose runs in `service`'s container, as a command to run here: the same
 * probe, with its port argument (the first number after the script) moved to `port`, so both
 * backends agree on "healthy".
 */
export function composeHealthCheck(service: string, port: number): string[] {
  const { command, at } = healthCommand(service);
  command[at] = String(port);
  return command;
}

/** The port the health check of `service` probes in its container. */
export function composeHealthPort(service: string): number {
  const { command, at } = healthCommand(service);
  return Number(command[at]);
}

function healthCommand(service: string): { command: string[]; at: number } {
  const test = composeFile().services[service]?.healthcheck?.test;
  if (!Array.isArray(test) || test[0] !== "CMD")
    throw new Error(`docker-compose.yml has no ["CMD", …] health check for ${service}`);
  // `$$` is how the compose file writes a `$` that compose must not interpolate.
  const command = (test.slice(1) as string[]).map((a) => a.replace(/\$\$/g, "$"));
  const at = command.findIndex((a, i) => i > 0 && /^\d+$/.test(a));
  if (at < 0) throw new Error(`the health check of ${service} takes no port: ${JSON.stringify(test)}`);
  return { command, at };
}

/**
 * The PKI volume a service mounts, if any: the directory the compose file's `certs` service writes
 * it from (`pki-<dir>`), and where the service sees it.
 */
export function composePkiMount(service: string): { dir: string; mountPath: string } | undefined {
  for (const volume of composeFile().services[service]?.volumes ?? []) {
    const [name, mountPath] = volume.split(":");
    if (name!.startsWith("pki-") && mountPath) return { dir: name!.slice(4), mountPath };
  }
  return undefined;
}

/** A compose value with `${NAME:-default}` / `${NAME}` filled in from `env`, as compose does. */
export function interpolate(value: string, env: NodeJS.ProcessEnv): string {
  return value.replace(
    /\$\{([A-Z0-9_]+)(?::-([^}]*))?\}/g,
    (_, name: string, fallback?: string) => env[name] || (fallback ?? ""),
  );
}
