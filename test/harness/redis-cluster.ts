/**
 * A throwaway three-node Redis Cluster on loopback (masters only), built with redis-cli.
 */
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import { promisify } from "node:util";
import { setTimeout as delay } from "node:timers/promises";
import { redisToolPath, startRedis, type RedisServer } from "./redis-server.js";

const run = promisify(execFile);

export interface RedisClusterHandle {
  nodes: { host: string; port: number }[];
  servers: RedisServer[];
  /** `redis+cluster://…`, as the control plane's --store takes it. */
  spec: string;
  /** Kills node i, as in a crash, keeping its directory (and so its cluster identity). */
  crash(i: number): Promise<void>;
  /** Starts a crashed node again on its port and directory: it rejoins the cluster, without data. */
  restart(i: number): Promise<void>;
  stop(): Promise<void>;
}

const nodeArgs = (port: number) => [
  "--cluster-enabled",
  "yes",
  "--cluster-config-file",
  `nodes-${port}.conf`,
];

export async function startRedisCluster(): Promise<RedisClusterHandle> {
  // Checked first: without it the nodes would start and the cluster never form.
  const cli = redisToolPath("redis-cli");
  const started = await Promise.allSettled([0, 1, 2].map(() => startRedis({ args: nodeArgs })));
  const servers = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const dirs = servers.map((s) => s.dir);
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop()));
    // A restarted node does not own its directory.
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  };
  try {
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    const addrs = servers.map((s) => `127.0.0.1:${s.port}`);
    await run(cli, ["--cluster", "create", ...addrs, "--cluster-replicas", "0", "--cluster-yes"], {
      timeout: 30_000,
    });
    // redis-cli returns once the nodes agree on the slots; clients need every node to say the
    // cluster is ok as well.
    await untilClusterOk(cli, servers);
    return {
      nodes: servers.map((s) => ({ host: "127.0.0.1", port: s.port })),
      servers,
      spec: `redis+cluster://${addrs.join(",")}`,
      crash: (i) => servers[i]!.stop({ signal: "SIGKILL", keepDir: true }),
      restart: async (i) => {
        const { port, dir } = servers[i]!;
        servers[i] = await startRedis({ port, dir, args: nodeArgs });
        // Answering PING is not being back in the cluster: wait until every node says it is whole.
        await untilClusterOk(cli, servers);
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function untilClusterOk(cli: string, servers: RedisServer[]): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (const s of servers) {
    for (;;) {
      const { stdout } = await run(cli, ["-p", String(s.port), "cluster", "info"]);
      if (stdout.includes("cluster_state:ok")) break;
      if (Date.now() > deadline) {
        throw new Error(`the cluster on ${servers.map((n) => n.port).join(",")} did not become ok`);
      }
      await delay(50);
    }
  }
}
