import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";

/*
 * Ports handed out here are bound later, by another process (Envoy, Redis, a service). Between
 * the two, a port taken from the kernel's ephemeral range can be given to anyone who binds port 0
 * or opens a connection: another test's upstream, or the other test worker's Envoy, which then
 * answers in its place. So ports come from below the ephemeral range instead, where the kernel
 * never hands one out by itself, in a slice of its own for each test worker, and each process
 * walks its slice from its own starting point without handing the same port out twice.
 */

const WINDOW_START = 20_000;
const SLICE = 1_500;

function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    const n = Number(low);
    return Number.isInteger(n) && n > 0 ? n : 32_768;
  } catch {
    return 32_768;
  }
}

/** This process's slice: its first port, and the offset of the next one to try. */
interface Slice {
  start: number;
  next: number;
}

function makeSlice(): Slice | undefined {
  const slices = Math.floor((ephemeralLow() - WINDOW_START) / SLICE);
  if (slices < 2) return undefined;
  // Vitest numbers its workers from 1; a process outside vitest takes a slice by its pid.
  const worker = Number(process.env.VITEST_POOL_ID);
  const index = Number.isInteger(worker) && worker > 0 ? (worker - 1) % slices : process.pid % slices;
  const start = WINDOW_START + index * SLICE;
  return { start, next: (process.pid * 7_919) % SLICE };
}

let slice: Slice | undefined | null = null;

function listen(port: number): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", (err: NodeJS.ErrnoException) =>
      err.code === "EADDRINUSE" || err.code === "EACCES" ? resolve(undefined) : reject(err),
    );
    srv.listen(port, "127.0.0.1", () => resolve(srv));
  });
}

function portOf(srv: Server): number {
  const addr = srv.address();
  if (addr === null || typeof addr === "string") throw new Error("test listener has no TCP address");
  return addr.port;
}

function close(srv: Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/** A listening socket on a port this process has not handed out before, held until closed. */
async function hold(): Promise<Server> {
  if (slice === null) slice = makeSlice();
  if (slice === undefined) {
    const srv = await listen(0);
    if (srv === undefined) throw new Error("no ephemeral loopback port");
    return srv;
  }
  for (let tried = 0; tried < SLICE; tried++) {
    const port = slice.start + slice.next;
    slice.next = (slice.next + 1) % SLICE;
    const srv = await listen(port);
    if (srv !== undefined) return srv;
  }
  throw new Error(`no free loopback port in ${slice.start}-${slice.start + SLICE - 1}`);
}

/**
 * A loopback port that is free now, outside the kernel's ephemeral range and not handed out
 * before by this process, so nothing binds it by chance before the caller does.
 */
export async function freePort(): Promise<number> {
  const srv = await hold();
  const port = portOf(srv);
  await close(srv);
  return port;
}

/** A tuple of N numbers for a literal N, so `const [a, b] = await freePorts(2)` needs no `!`. */
export type Ports<N extends number, Acc extends number[] = []> = number extends N
  ? number[]
  : Acc["length"] extends N
    ? Acc
    : Ports<N, [...Acc, number]>;

/** `n` distinct free ports, each as `freePort` gives them. */
export async function freePorts<N extends number>(n: N): Promise<Ports<N>> {
  if (!Number.isInteger(n) || n < 0) throw new Error(`freePorts: n must be a non-negative integer, got ${n}`);
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await hold());
    return servers.map(portOf) as Ports<N>;
  } finally {
    await Promise.all(servers.map(close));
  }
}
