// Go baselines of the benchmarks: built on first use into a cache outside the repository.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Where the benchmarks keep what they build between runs: $PORTICO_BENCH_CACHE, else ~/.cache/portico-bench. */
export function benchCacheDir(): string {
  return process.env.PORTICO_BENCH_CACHE ?? path.join(os.homedir(), ".cache", "portico-bench");
}

/** `go version`'s line, or undefined when there is no Go to build with. */
export async function goVersion(): Promise<string | undefined> {
  try {
    return (await run("go", ["version"], { timeout: 10_000 })).stdout.trim();
  } catch {
    return undefined;
  }
}

/**
 * Runs `go ARGS…` to build `binary`: the binary, or why there is none (the last lines Go printed).
 */
export async function goBuild(
  args: string[],
  binary: string,
  o: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ binary: string } | { error: string }> {
  if ((await goVersion()) === undefined) return { error: "no `go` on PATH to build it with" };
  try {
    fs.mkdirSync(path.dirname(binary), { recursive: true });
    await run("go", args, { cwd: o.cwd, env: o.env, timeout: o.timeoutMs, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const why = (e.stderr ?? "").trim().split("\n").slice(-5).join(" | ") || e.message;
    return { error: `go ${args.join(" ")} failed: ${why}` };
  }
  return fs.existsSync(binary) ? { binary } : { error: `go ${args[0]} left no ${binary}` };
}
