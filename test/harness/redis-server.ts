/**
 * A throwaway redis-server for tests: a free loopback port, its own temp directory, no persistence
 * unless asked for. Reusable by any suite that needs a real Redis.
 */
import { freePort } from "./ports.js";
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";

export interface RedisServer {
  readonly port: number;
  /** The server's working directory (AOF and RDB files land here). */
  readonly dir: string;
  readonly url: string;
  readonly pid: number;
  /**
   * Stops the server and waits for it to exit. SIGKILL simulates a crash. The directory is removed
   * only if startRedis created it, and only when `keepDir` is not set.
   */
  stop(opts?: { signal?: NodeJS.Signals; keepDir?: boolean }): Promise<void>;
}

export interface StartRedisOptions {
  /** A fixed port, e.g. to start a server again where a stopped one was; a free one otherwise. */
  port?: number;
  /** Reuse a directory (to restart with the same data); a new temp directory otherwise. */
  dir?: string;
  /**
   * Extra arguments, after the defaults (`--save "" --appendonly no`), so they can override them;
   * a function gets the port the server is about to take.
   */
  args?: string[] | ((port: number) => string[]);
  /** How long to wait for PING to answer. */
  timeoutMs?: number;
}

/**
 * A Redis program on PATH (`redis-server`, `redis-cli`). Throws, with the way to install it, when
 * there is none: a suite that claims to test Redis fails rather than pass on something else.
 */
export function redisToolPath(name: "redis-server" | "redis-cli"): string {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  throw new Error(
    `${name} was not found on PATH; install it (apt-get update && apt-get install -y redis-server) to run the Redis tests`,
  );
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisServer> {
  const binary = redisToolPath("redis-server");
  // A free port can be taken by someone else before redis binds it: try a few.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(binary, opts);
    } catch (err) {
      if (opts.port !== undefined || attempt >= 3 || !(err as { portInUse?: boolean }).portInUse) throw err;
    }
  }
}

async function startOnce(binary: string, opts: StartRedisOptions): Promise<RedisServer> {
  const port = opts.port ?? (await freePort());
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), "portico-redis-"));
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--dir",
    dir,
    "--save",
    "",
    "--appendonly",
    "no",
    "--daemonize",
    "no",
    "--loglevel",
    "warning",
    ...(typeof opts.args === "function" ? opts.args(port) : (opts.args ?? [])),
  ];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4096);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));

  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  while (!(await pingOk(port))) {
    if (exitCode !== undefined || Date.now() > deadline) {
      child.kill("SIGKILL");
      await exited;
      if (ownDir) rmSync(dir, { recursive: true, force: true });
      const err = new Error(
        `redis-server on port ${port} ${exitCode !== undefined ? `exited with ${exitCode}` : "did not answer PING"}: ${output.trim()}`,
      );
      (err as { portInUse?: boolean }).portInUse =
        /in use|Could not create server TCP listening socket/i.test(output);
      throw err;
    }
    await delay(25);
  }

  return {
    port,
    dir,
    url: `redis://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: (stopOpts = {}) =>
      stop(child, exited, () => exitCode, ownDir && !stopOpts.keepDir ? dir : undefined, stopOpts.signal),
  };
}

async function stop(
  child: ChildProcess,
  exited: Promise<number | null>,
  exitCode: () => number | null | undefined,
  removeDir: string | undefined,
  signal: NodeJS.Signals = "SIGTERM",
): Promise<void> {
  if (exitCode() === undefined) {
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  }
  if (removeDir) rmSync(removeDir, { recursive: true, force: true });
}

/** One PING over a raw socket, so waiting for the server does not depend on the client under test. */
function pingOk(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: "127.0.0.1" });
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString();
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG"));
    });
  });
}
