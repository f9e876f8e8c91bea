// How a bench starts one of Portico's services: from its TypeScript sources (under tsx, the
// default, so a bench follows the working tree), or with `--compiled` from its build
// (`<service>/dist/main.js`, after `npm run build`) as production runs it. `npm run bench` passes
// `--compiled`: tsx adds work of its own to every call (its `__name` helper shows in profiles).
import fs from "node:fs";
import path from "node:path";
import { RUN_FROM_SOURCE } from "@portico/testing";

export type Service = "ext-authz" | "ratelimit-service";

/** Node's arguments before the service's own: its entry point, and tsx when it is the source. */
export function serviceEntry(root: string, service: Service, compiled: boolean): string[] {
  if (!compiled) return [...RUN_FROM_SOURCE, path.join(root, service, "src", "main.ts")];
  const main = path.join(root, service, "dist", "main.js");
  if (!fs.existsSync(main)) throw new Error(`--compiled: ${main} is missing (npm run build makes it)`);
  return [main];
}
