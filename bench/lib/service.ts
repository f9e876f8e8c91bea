// How a bench starts one of Portico's services: from its TypeScript sources (under tsx, the
// default, so a bench follows the working tree), or with `--compiled` from its build
// (`<service>/dist/main.js`, after `npm run build`) as production runs it. `npm run bench` passes
// `--compiled`: tsx adds work of its own to every call (its `__name` helper shows in profiles).
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { EXT_AUTHZ_NODE_ARGS } from "@portico/ext-authz/runtime";
import { RATELIMIT_NODE_ARGS } from "@portico/ratelimit-service/runtime";
import { RUN_FROM_SOURCE } from "@portico/testing";

export type Service = "ext-authz" | "ratelimit-service";

/** The Node arguments a service of this checkout ships with (its runtime module), before its entry point. */
export const SHIPPED_NODE_ARGS: Readonly<Record<Service, readonly string[]>> = {
  "ext-authz": EXT_AUTHZ_NODE_ARGS,
  "ratelimit-service": RATELIMIT_NODE_ARGS,
};

/** The name each service's runtime module gives its Node arguments. */
const RUNTIME_EXPORT: Readonly<Record<Service, string>> = {
  "ext-authz": "EXT_AUTHZ_NODE_ARGS",
  "ratelimit-service": "RATELIMIT_NODE_ARGS",
};

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(import.meta.url);

/**
 * What the service of the checkout at `root` ships with: this checkout's, or another's (a
 * BENCH_BASELINE) as its build says, nothing where its build has no runtime module.
 */
function shippedNodeArgs(root: string, service: Service): readonly string[] {
  if (path.resolve(root) === REPO) return SHIPPED_NODE_ARGS[service];
  const runtime = path.join(root, service, "dist", "runtime.js");
  if (!fs.existsSync(runtime)) return [];
  const shipped = (require(runtime) as Record<string, readonly string[] | undefined>)[
    RUNTIME_EXPORT[service]
  ];
  return shipped ?? [];
}

/**
 * Node's arguments before the service's own: those it ships with, its entry point, and tsx when
 * it is the source.
 */
export function serviceEntry(root: string, service: Service, compiled: boolean): string[] {
  const shipped = shippedNodeArgs(root, service);
  if (!compiled) return [...shipped, ...RUN_FROM_SOURCE, path.join(root, service, "src", "main.ts")];
  const main = path.join(root, service, "dist", "main.js");
  if (!fs.existsSync(main)) throw new Error(`--compiled: ${main} is missing (npm run build makes it)`);
  return [...shipped, main];
}
