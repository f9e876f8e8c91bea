// wrk runs and the Lua scripts they send, for the benchmarks that load a real Envoy over HTTP.
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export interface WrkResult {
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  /** Answers with a status of 400 or more (wrk's "Non-2xx or 3xx responses"). */
  non2xx: number;
  /** connect, read, write and timeout errors. */
  socketErrors: number;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(v.trim());
  if (!m) throw new Error(`wrk latency '${v}'`);
  const n = Number(m[1]);
  return m[2] === "us" ? n / 1000 : m[2] === "s" ? n * 1000 : n;
}

/** wrk in a child process, awaited: an upstream in this process must keep answering meanwhile. */
export async function wrk(
  url: string,
  script: string,
  o: { connections: number; seconds: number },
): Promise<WrkResult> {
  const args = ["-t1", `-c${o.connections}`, `-d${o.seconds}s`, "--latency", "-s", script, url];
  const child = spawn("wrk", args, { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise((resolve) => child.on("close", resolve));
  if (!/Requests\/sec/.test(out)) throw new Error(`wrk failed: ${out}`);
  const pct = (p: string) => toMs(new RegExp(`^\\s+${p}%\\s+(\\S+)`, "m").exec(out)![1]!);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(/(\d+) requests in/.exec(out)![1]),
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)![1]),
    p50: pct("50"),
    p99: pct("99"),
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    socketErrors: socket ? socket.slice(1).reduce((a, n) => a + Number(n), 0) : 0,
  };
}

/**
 * A wrk script, written into `dir`, sending header `header` with each of `values` in turn, from
 * the one after `start`: wrk begins each run afresh, so a run that must carry on where the last
 * one stopped says where.
 */
export function headerScript(dir: string, name: string, header: string, values: string[], start = 0): string {
  const file = path.join(dir, `${name}.lua`);
  fs.writeFileSync(
    file,
    [
      "local values = {",
      ...values.map((v) => `  "${v}",`),
      "}",
      `local n, i = #values, ${start % values.length}`,
      "request = function()",
      "  i = i % n + 1",
      `  return wrk.format(nil, nil, { ["${header}"] = values[i] })`,
      "end",
      "",
    ].join("\n"),
  );
  return file;
}

/** A wrk script sending `Authorization: Bearer <token>` with each token in turn. */
export function bearerScript(dir: string, name: string, tokens: string[], start = 0): string {
  return headerScript(
    dir,
    name,
    "Authorization",
    tokens.map((t) => `Bearer ${t}`),
    start,
  );
}

/** Exits with the reason when wrk is not installed. */
export function requireWrk(): void {
  if (!spawnSync("wrk", ["--version"]).error) return;
  console.error("wrk is needed (apt-get install -y wrk)");
  process.exit(1);
}
