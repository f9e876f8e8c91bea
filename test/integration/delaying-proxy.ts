import net from "node:net";

/**
 * A TCP proxy on loopback that holds every chunk from the upstream side for `delayMs` before
 * passing it on, in order: an xDS connection with latency between an Envoy and the control plane.
 * The target can be switched (a replica that died, the node reconnecting to another).
 */
export interface DelayingProxy {
  readonly port: number;
  retarget(port: number): void;
  /** Cuts every open connection (the peer sees the control plane go away). */
  cut(): void;
  close(): Promise<void>;
}

export async function startDelayingProxy(targetPort: number, delayMs: number): Promise<DelayingProxy> {
  let target = targetPort;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    // Chunks keep their order: each leaves `delayMs` after it arrived.
    upstream.on("data", (chunk: Buffer) => {
      setTimeout(() => {
        if (!client.destroyed) client.write(chunk);
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    retarget(p) {
      target = p;
    },
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
