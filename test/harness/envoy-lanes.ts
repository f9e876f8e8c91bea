import http from "node:http";
import type { EnvoyProcess } from "./envoy.js";

/** One answer on a lane: its status, headers (lower-cased names) and body. */
export interface LaneAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A kept-alive connection to one known Envoy of several sharing a listening port. */
export interface Lane {
  /** The index, in the list given to `openLane`, of the Envoy at the other end. */
  readonly envoy: number;
  readonly localAddress: string;
  get(path: string, headers?: Record<string, string>): Promise<LaneAnswer>;
  close(): void;
}

export interface OpenLaneOptions {
  envoys: readonly EnvoyProcess[];
  /** The Envoy wanted, by index in `envoys`. */
  target: number;
  /** The port they all listen on, at 127.0.0.1. */
  port: number;
  /** The client's address (127.0.0.x): what Envoy's `remote_address` is. Default 127.0.0.1. */
  localAddress?: string;
  /** A path answered without side effects (no limits), used to open the connection. */
  probePath: string;
  /** A counter each Envoy adds one to per new connection, e.g. `http.<prefix>.downstream_cx_total`. */
  counter: string;
  /** Connections tried before giving up; default 64. */
  attempts?: number;
}

function get(agent: http.Agent, port: number, path: string, headers: Record<string, string>) {
  return new Promise<LaneAnswer & { localPort: number | undefined }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, headers, agent }, (res) => {
      const localPort = res.socket?.localPort;
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("error", reject);
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, localPort }));
    });
    req.setTimeout(5_000, () => req.destroy(new Error(`GET ${path} through a lane took more than 5 s`)));
    req.on("error", reject);
    req.end();
  });
}

/**
 * Opens a connection that reaches the chosen Envoy. Envoys of one gateway group on one host all
 * listen on the group's address and port (SO_REUSEPORT), and the kernel gives each new connection
 * to one of them by a hash of its addresses and ports. So: open a keep-alive connection, see whose
 * connection counter went up, keep it if it is the wanted Envoy's (else close it and try again),
 * and send every request meant for that Envoy on it. A request finding the connection gone fails
 * rather than reach another Envoy unnoticed.
 */
export async function openLane(o: OpenLaneOptions): Promise<Lane> {
  const localAddress = o.localAddress ?? "127.0.0.1";
  const counts = () => Promise.all(o.envoys.map(async (e) => (await e.stat(o.counter)) ?? 0));
  for (let attempt = 0; attempt < (o.attempts ?? 64); attempt++) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress });
    const before = await counts();
    const probe = await get(agent, o.port, o.probePath, {});
    const after = await counts();
    const reached = after.map((n, i) => n - before[i]!);
    const envoy = reached.findIndex((d) => d > 0);
    if (probe.status !== 200 || reached.filter((d) => d > 0).length !== 1 || envoy !== o.target) {
      agent.destroy();
      continue;
    }
    const localPort = probe.localPort;
    return {
      envoy,
      localAddress,
      async get(path, headers = {}) {
        const answer = await get(agent, o.port, path, headers);
        if (answer.localPort !== localPort) {
          throw new Error(`the connection to Envoy ${envoy} was closed: a new one may reach another Envoy`);
        }
        return { status: answer.status, headers: answer.headers, body: answer.body };
      },
      close: () => agent.destroy(),
    };
  }
  throw new Error(
    `no connection from ${localAddress} reached Envoy ${o.target} in ${o.attempts ?? 64} tries`,
  );
}
