import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { NODE_MAJOR, REPO_ROOT } from "./node-runtime.mjs";

const LAUNCHER = path.join(REPO_ROOT, "scripts", "node.mjs");

/** Runs scripts/node.mjs with `args`; resolves with its exit code and output once it exits. */
function launch(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; onLine?: (line: string, kill: (s: NodeJS.Signals) => void) => void } = {},
): Promise<{ code: number | null; out: string[] }> {
  const child = spawn(process.execPath, [LAUNCHER, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on("line", (line) => {
      out.push(line);
      opts.onLine?.(line, (s) => child.kill(s));
    });
  }
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, out })));
}

describe("the Node that Portico runs on", () => {
  it("runs the tests", () => {
    expect(Number(process.versions.node.split(".")[0])).toBeGreaterThanOrEqual(NODE_MAJOR);
  });

  it("runs what scripts/node.mjs is given, with the child's exit code", async () => {
    const { code, out } = await launch(["-e", "console.log(process.versions.node); process.exit(7)"]);
    expect(code).toBe(7);
    expect(Number(out[0]?.split(".")[0])).toBeGreaterThanOrEqual(NODE_MAJOR);
  });

  it("passes a SIGTERM on to the child and waits for it to stop", async () => {
    const stopping =
      "process.on('SIGTERM', () => { console.log('stopping'); setTimeout(() => process.exit(3), 100); });" +
      "setInterval(() => {}, 1000); console.log('ready');";
    const { code, out } = await launch(["-e", stopping], {
      onLine: (line, kill) => line === "ready" && kill("SIGTERM"),
    });
    expect(out).toEqual(["ready", "stopping"]);
    expect(code).toBe(3);
  });

  it("refuses a PORTICO_NODE that is not a Node binary, saying so", async () => {
    const { code, out } = await launch(["-e", "0"], { env: { PORTICO_NODE: "/nonexistent/node" } });
    expect(code).toBe(1);
    expect(out.join("\n")).toMatch(/PORTICO_NODE=\/nonexistent\/node is not a Node binary that runs/);
  });
});
