// What this machine can move through loopback at all: a trivial child process writes one body to
// each of `clients` TCP connections, this process only counts bytes. The fan-out of a change can be
// no faster than this, whatever the control plane does.
import { spawn } from "node:child_process";
import net from "node:net";
import { performance } from "node:perf_hooks";

/** Writes `bytes` to every connection accepted on the port given, once `clients` are connected. */
const WRITER = `
const net = require("node:net");
const [port, clients, bytes] = process.argv.slice(1).map(Number);
const body = Buffer.alloc(bytes, 7);
const socks = [];
for (let i = 0; i < clients; i++) {
  const s = net.connect(port, "127.0.0.1", () => {
    socks.push(s);
    if (socks.length === clients) for (const x of socks) x.write(body);
  });
  s.on("error", () => {});
}
process.on("message", () => { for (const x of socks) x.destroy(); process.exit(0); });
`;

/** Time from the first byte received until every connection has delivered its body, ms. */
export interface LoopbackFloor {
  clients: number;
  bytesEach: number;
  ms: number;
  mibPerSecond: number;
}

export async function loopbackFloor(clients: number, bytesEach: number): Promise<LoopbackFloor> {
  let complete = 0;
  let t0 = NaN;
  let finish: (ms: number) => void = () => {};
  const done = new Promise<number>((resolve) => (finish = resolve));
  const server = net.createServer({ noDelay: true }, (sock) => {
    let got = 0;
    // The writer writes once all its connections are up: the clock starts at the first byte.
    sock.on("data", (chunk: Buffer) => {
      if (Number.isNaN(t0)) t0 = performance.now();
      got += chunk.length;
      if (got === bytesEach && ++complete === clients) finish(performance.now() - t0);
    });
    sock.on("error", () => {});
  });
  server.maxConnections = clients + 1;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", 1024, resolve));
  const port = (server.address() as net.AddressInfo).port;
  const child = spawn(process.execPath, ["-e", WRITER, String(port), String(clients), String(bytesEach)], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  try {
    const ms = await done;
    return { clients, bytesEach, ms, mibPerSecond: (clients * bytesEach) / 1024 / 1024 / (ms / 1000) };
  } finally {
    child.send("stop");
    await new Promise<void>((resolve) => child.once("exit", () => resolve()));
    server.close();
  }
}
