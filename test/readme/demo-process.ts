/**
 * `npm run demo` as a test starts it: the same demo (deploy/demo/demo.ts, from source) through the
 * same launcher (scripts/node.mjs), on free ports given through the README's variables, with its
 * state in a temporary directory.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { DEMO_PORTS, PORT_NAMES, type DemoPorts } from "@portico/deploy";
import { REPO_ROOT } from "@portico/envoy";
import { freePorts } from "../harness/ports.js";
import { waitFor } from "../harness/wait.js";

export interface RunningDemo {
  /** The launcher's process (scripts/node.mjs), the one `npm run demo` execs into. */
  readonly launcher: ChildProcess;
  readonly ports: DemoPorts;
  /** The admin token the demo printed. */
  readonly token: string;
  /** Every line it printed so far. */
  readonly lines: string[];
  /** Resolves once the launcher has exited, with its code or signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Stops it (SIGTERM) and waits, if it still runs. */
  stop(): Promise<void>;
}

export interface StartDemoOptions {
  /** Starts the launcher through `bash -c`, as a stand-in for npm (a parent the test can kill). */
  parentShell?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** The environment that puts each of the demo's ports where `ports` says. */
export function portsEnv(ports: DemoPorts): Record<string, string> {
  return Object.fromEntries(PORT_NAMES.map((name) => [DEMO_PORTS[name].env, String(ports[name])]));
}

export async function startDemo(opts: StartDemoOptions = {}): Promise<RunningDemo> {
  const free = await freePorts(PORT_NAMES.length);
  const ports = Object.fromEntries(PORT_NAMES.map((name, i) => [name, free[i]!])) as DemoPorts;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-demo-"));
  const args = [
    path.join(REPO_ROOT, "scripts/node.mjs"),
    "--conditions=source",
    "--import",
    "tsx",
    path.join(REPO_ROOT, "deploy/demo/demo.ts"),
  ];
  const env = {
    ...process.env,
    ...portsEnv(ports),
    PORTICO_DEMO_DIR: dir,
    LOG_LEVEL: "warn",
    ...opts.env,
  };
  const quoted = [process.execPath, ...args].map((a) => `'${a}'`).join(" ");
  // `; exit $?` keeps bash from exec-ing its last command, so the launcher has bash as its parent.
  const launcher = opts.parentShell
    ? spawn("bash", ["-c", `${quoted}; exit $?`], { env, stdio: ["ignore", "pipe", "pipe"] })
    : spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  for (const stream of [launcher.stdout!, launcher.stderr!])
    createInterface({ input: stream }).on("line", (line) => lines.push(line));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    launcher.once("exit", (code, signal) => resolve({ code, signal })),
  );
  let gone = false;
  void exited.then(() => {
    gone = true;
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const stop = async () => {
    if (gone) return;
    launcher.kill("SIGTERM");
    await exited;
  };
  let outcome: "up" | "exited";
  try {
    outcome = await waitFor(
      () => (gone ? "exited" : lines.some((l) => l.startsWith("Portico demo is up")) && "up"),
      { what: "the demo to say it is up", timeoutMs: 120_000, intervalMs: 50 },
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n--- demo output ---\n${lines.join("\n")}`);
  }
  if (outcome === "exited") throw new Error(`the demo exited before it was up:\n${lines.join("\n")}`);
  const token = lines.map((l) => /export PORTICO_TOKEN=(\S+)/.exec(l)?.[1]).find(Boolean);
  if (!token) throw new Error(`the demo printed no admin token:\n${lines.join("\n")}`);
  return { launcher, ports, token, lines, exited, stop };
}

/** Every process under `pid` (children, theirs…), from one `ps` listing. */
export function descendants(pid: number): number[] {
  const table = execFileSync("ps", ["-e", "-o", "pid=,ppid="], { encoding: "utf8" })
    .trim()
    .split("\n")
    .map((l) => l.trim().split(/\s+/).map(Number) as [number, number]);
  const out: number[] = [];
  const walk = (parent: number) => {
    for (const [child, ppid] of table)
      if (ppid === parent) {
        out.push(child);
        walk(child);
      }
  };
  walk(pid);
  return out;
}

/** Whether `pid` is a live process (an exited one not yet reaped counts as gone). */
export function isRunning(pid: number): boolean {
  try {
    // The state follows the command name, which is in parentheses and may hold spaces.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
