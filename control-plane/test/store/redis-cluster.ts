/**
 * A throwaway three-node Redis Cluster on loopback (no replicas), built with redis-cli.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { startRedis, type RedisServer } from "./redis-server.js";

const run = promisify(execFile);

export interface RedisClusterHandle {
  nodes: { host: string; port: number }[];
  /** `redis+cluster://…` for the control plane's --store. */
  spec: string;
  stop(): Promise<void>;
}

export async function startRedisCluster(): Promise<RedisClusterHandle> {
  const servers: RedisServer[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      servers.push(
        await startRedis({ args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] }),
      );
    }
    const addrs = servers.map((s) => `127.0.0.1:${s.port}`);
    await run("redis-cli", ["--cluster", "create", ...addrs, "--cluster-replicas", "0", "--cluster-yes"], {
      timeout: 30_000,
    });
    // Every node must agree the cluster is whole before clients use it.
    const deadline = Date.now() + 15_000;
    for (const s of servers) {
      for (;;) {
        const { stdout } = await run("redis-cli", ["-p", String(s.port), "cluster", "info"]);
        if (stdout.includes("cluster_state:ok")) break;
        if (Date.now() > deadline) throw new Error(`cluster on ${addrs.join(",")} did not become ok`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const nodes = servers.map((s) => ({ host: "127.0.0.1", port: s.port }));
    return {
      nodes,
      spec: `redis+cluster://${addrs.join(",")}`,
      stop: async () => {
        await Promise.all(servers.map((s) => s.stop()));
      },
    };
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
}
