import path from "node:path";
import { parseArgs } from "node:util";
import { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_ARGS } from "@portico/control-plane";

/** What the command line asked for. */
export interface XdsBenchOptions {
  /** 20 changes, 100 clients: well under a minute. */
  quick: boolean;
  /** Adds the runs that are informative but push the total past five minutes. */
  long: boolean;
  sections: ReadonlySet<number>;
  /** The checkout the control plane under test is run from. */
  cpRoot: string;
  /** The control plane's entry point: its TypeScript source (run under tsx) or, with `--cp-compiled`, its build as production runs it. */
  cpMain: string;
  out: string;
  /** The control plane writes a CPU profile here when it exits (`--cpu-prof`). */
  cpProfileDir?: string;
  /**
   * Node flags and environment the control plane is started with: those it ships with
   * (control-plane/src/runtime.ts) unless `--cp-runtime none`, then any `--cp-node-arg`/`--cp-env`.
   */
  cpNodeArgs: string[];
  cpEnv: Record<string, string>;
}

export function parseOptions(args: string[], repo: string): XdsBenchOptions {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      long: { type: "boolean", default: false },
      sections: { type: "string", default: "1,2,3,4,5,6,7" },
      "cp-prof": { type: "string" },
      "cp-root": { type: "string", default: repo },
      "cp-compiled": { type: "boolean", default: false },
      "cp-runtime": { type: "string", default: "shipped" },
      "cp-node-arg": { type: "string", multiple: true, default: [] },
      "cp-env": { type: "string", multiple: true, default: [] },
      out: { type: "string", default: path.join(repo, "bench", "results", "xds.json") },
    },
  });
  const cpRoot = path.resolve(values["cp-root"]);
  const runtime = values["cp-runtime"];
  if (runtime !== "shipped" && runtime !== "none")
    throw new Error(`--cp-runtime: "shipped" (the default) or "none", not "${runtime}"`);
  const shipped = runtime === "shipped";
  return {
    quick: values.quick,
    long: values.long && !values.quick,
    sections: new Set(values.sections.split(",").map((s) => Number(s.trim()))),
    cpRoot,
    cpMain: values["cp-compiled"]
      ? path.join(cpRoot, "control-plane", "dist", "main.js")
      : path.join(cpRoot, "control-plane", "src", "main.ts"),
    out: values.out,
    cpProfileDir: values["cp-prof"] ? path.resolve(values["cp-prof"]) : undefined,
    cpNodeArgs: [...(shipped ? CONTROL_PLANE_NODE_ARGS : []), ...values["cp-node-arg"]],
    cpEnv: {
      ...(shipped ? CONTROL_PLANE_ENV : {}),
      ...Object.fromEntries(
        values["cp-env"].map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
      ),
    },
  };
}

/** How many changes, clients, routes and runs each section uses. */
export type XdsBenchParams = ReturnType<typeof benchParams>;

export function benchParams(quick: boolean) {
  return {
    changes: quick ? 20 : 100,
    warmupChanges: 3,
    baselineRequests: quick ? 200 : 1000,
    s1Protocols: ["sotw", "delta"] as const,
    fleetSizes: quick ? [100] : [100, 1000],
    fleetProtocols: ["delta", "sotw"] as const,
    fleetReps: (clients: number) => (quick || clients >= 1000 ? 3 : 5),
    fleetRoutes: 100,
    fleetUpstreams: 20,
    bigRoutes: 10_000,
    bigUpstreams: 2_000,
    buildRuns: quick ? 1 : 3,
    coldRuns: quick ? 1 : 3,
    rssClients: quick ? 100 : 1000,
    connectBatch: 100,
    scaleClients: quick ? 100 : 1000,
    scaleRounds: quick ? 2 : 5,
    scaleLongClients: 3000,
    replicaClients: quick ? 10 : 50,
    replicaRounds: quick ? 2 : 5,
  };
}
