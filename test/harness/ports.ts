import { createServer, type Server } from "node:net";

function listenEphemeral(): Promise<Server> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve(srv));
  });
}

function portOf(srv: Server): number {
  const addr = srv.address();
  if (addr === null || typeof addr === "string") throw new Error("ephemeral listener has no TCP address");
  return addr.port;
}

function close(srv: Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/**
 * A loopback port that was free a moment ago. Another process can take it before the caller
 * binds it; prefer binding port 0 directly when the code under test allows it.
 */
export async function freePort(): Promise<number> {
  const srv = await listenEphemeral();
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

/** `n` distinct free ports: all are held open together so the kernel cannot hand one out twice. */
export async function freePorts<N extends number>(n: N): Promise<Ports<N>> {
  if (!Number.isInteger(n) || n < 0) throw new Error(`freePorts: n must be a non-negative integer, got ${n}`);
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral());
    return servers.map(portOf) as Ports<N>;
  } finally {
    await Promise.all(servers.map(close));
  }
}
