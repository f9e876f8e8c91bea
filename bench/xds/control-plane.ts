// The control plane under test as a child process, so that its RSS is its own.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import type { ConfigInput } from "@portico/control-plane";
import { freePorts, waitFor, RUN_FROM_SOURCE } from "@portico/testing";
import { processMemory } from "../lib/proc.js";
import { median } from "../lib/stats.js";
import type { BenchContext } from "./context.js";
import type { HeapReading } from "./format.js";

// Memory readings are taken after a full collection, or a reading right after start-up (parse
// garbage not yet collected) could exceed one taken with a fleet connected. The hook only answers a
// signal; the control plane's code is untouched.
const GC_ON_SIGNAL =
  "data:text/javascript,process.on('SIGUSR2',()=>{globalThis.gc();globalThis.gc();process.stdout.write('bench-gc-done\\n')})";
const GC_DONE = "bench-gc-done";

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Sum of a Prometheus text exposition's samples of `name` whose labels include all of `labels`. */
export function sumMetric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const l = m[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** V8 heap and off-heap memory from prom-client's default Node.js metrics. */
export function heapFromMetrics(text: string): HeapReading {
  const mib = (name: string) =>
    Number(new RegExp(`^${name}\\s+(\\S+)`, "m").exec(text)?.[1] ?? NaN) / 1024 / 1024;
  return {
    usedMiB: mib("nodejs_heap_size_used_bytes"),
    totalMiB: mib("nodejs_heap_size_total_bytes"),
    externalMiB: mib("nodejs_external_memory_bytes"),
  };
}

type Launch = Pick<
  BenchContext,
  "tmpRoot" | "cpRoot" | "cpMain" | "cleanups" | "cpProfileDir" | "cpNodeArgs" | "cpEnv"
>;

export class ControlPlaneProcess {
  private ring: string[] = [];
  private gcCount = 0;
  private exited = false;

  private constructor(
    readonly child: ChildProcess,
    /** The config file it watches; `write` replaces it. */
    readonly file: string,
    readonly xdsPort: number,
    readonly adminPort: number,
  ) {
    const keep = (chunk: Buffer) => {
      const lines = chunk
        .toString("utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => (l.length > 400 ? `${l.slice(0, 400)}…` : l));
      this.gcCount += lines.filter((l) => l === GC_DONE).length;
      this.ring.push(...lines.filter((l) => l !== GC_DONE));
      if (this.ring.length > 200) this.ring.splice(0, this.ring.length - 200);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    child.once("exit", () => {
      this.exited = true;
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }
  get target(): string {
    return `127.0.0.1:${this.xdsPort}`;
  }

  /** Spawns it on `configText` (watched, debounce 0) and resolves once /readyz answers 200. */
  static async start(
    run: Launch,
    name: string,
    configText: string,
  ): Promise<{ cp: ControlPlaneProcess; readyMs: number }> {
    const dir = fs.mkdtempSync(path.join(run.tmpRoot, `${name}-`));
    const file = path.join(dir, "portico.yaml");
    writeAtomic(file, configText);
    const [xdsPort, adminPort] = await freePorts(2);
    const t0 = performance.now();
    const child = spawn(
      process.execPath,
      [
        "--expose-gc",
        ...(run.cpProfileDir ? ["--cpu-prof", "--cpu-prof-dir", run.cpProfileDir] : []),
        ...(run.cpNodeArgs ?? []),
        "--import",
        GC_ON_SIGNAL,
        ...(run.cpMain.endsWith(".ts") ? RUN_FROM_SOURCE : []),
        run.cpMain,
        "--config",
        file,
        "--xds-host",
        "127.0.0.1",
        "--xds-port",
        String(xdsPort),
        "--admin-host",
        "127.0.0.1",
        "--admin-port",
        String(adminPort),
        "--debounce-ms",
        "0",
      ],
      {
        // The working directory is a temp dir so that nothing the control plane writes by default
        // (store, tokens) lands in the checkout; the variables cover versions that read them and
        // are ignored by those that do not.
        cwd: dir,
        env: {
          ...process.env,
          LOG_LEVEL: "warn",
          PORTICO_WATCH_CONFIG: "true",
          PORTICO_STORE: `file:${path.join(dir, "store")}`,
          PORTICO_TOKENS_FILE: path.join(dir, "tokens.json"),
          TSX_TSCONFIG_PATH: path.join(run.cpRoot, "tsconfig.json"),
          ...run.cpEnv,
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    run.cleanups.track(child);
    const cp = new ControlPlaneProcess(child, file, xdsPort, adminPort);
    run.cleanups.push(() => cp.stop());
    let state: "ready" | "exited";
    try {
      state = await waitFor(
        async () => {
          if (cp.exited) return "exited" as const;
          const res = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
          await res.arrayBuffer();
          return res.status === 200 && ("ready" as const);
        },
        { what: `control plane ${name} /readyz`, timeoutMs: 120_000, intervalMs: 20 },
      );
    } catch (err) {
      throw new Error(`control plane did not become ready: ${(err as Error).message}\n${cp.logs()}`);
    }
    if (state === "exited") throw new Error(`control plane exited before it was ready:\n${cp.logs()}`);
    return { cp, readyMs: performance.now() - t0 };
  }

  logs(): string {
    return this.ring.slice(-40).join("\n");
  }

  memory(): { rssKiB: number; hwmKiB: number } {
    return processMemory(this.pid);
  }

  /** Samples RSS every 50 ms; `take` returns the highest reading since the previous `take`. */
  peakSampler(): { take(): number; stop(): void } {
    let peak = 0;
    const timer = setInterval(() => {
      try {
        peak = Math.max(peak, this.memory().rssKiB);
      } catch {
        // The process is gone; the run reports that elsewhere.
      }
    }, 50);
    return {
      take: () => {
        const p = peak;
        peak = 0;
        return p;
      },
      stop: () => clearInterval(timer),
    };
  }

  /** Full GC in the child; resolves once it reports back. */
  async gc(): Promise<void> {
    const before = this.gcCount;
    this.child.kill("SIGUSR2");
    await waitFor(() => this.gcCount > before, {
      what: "GC in the control plane",
      timeoutMs: 30_000,
      intervalMs: 10,
    });
    await sleep(200);
  }

  /** RSS after a full GC: the median of a few readings a moment apart. */
  async rss(samples = 5): Promise<number> {
    await this.gc();
    const xs: number[] = [];
    for (let i = 0; i < samples; i++) {
      xs.push(this.memory().rssKiB);
      await sleep(100);
    }
    return median(xs);
  }

  async heap(): Promise<HeapReading> {
    return heapFromMetrics(await this.metrics());
  }

  async metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.adminPort}/metrics`);
    return res.text();
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return sumMetric(await this.metrics(), name, labels);
  }

  /** Until it has dropped every xDS node, so the next run starts from an empty fleet. */
  async waitNoNodes(): Promise<void> {
    await waitFor(async () => (await this.metric("portico_xds_connected_nodes")) === 0, {
      what: "control plane to forget every node",
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  }

  write(config: ConfigInput | string): void {
    writeAtomic(this.file, typeof config === "string" ? config : JSON.stringify(config));
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(timer);
  }
}
