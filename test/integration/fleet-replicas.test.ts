import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ChildProcess } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { XdsClient } from "@portico/common";
import { hashToken, TypeUrl } from "@portico/control-plane";
import {
  ADMIN_TOKEN,
  freePorts,
  spawnControlPlane,
  startAdmin,
  startRedis,
  waitFor,
  type AdminHandle,
  type RedisServer,
} from "../harness/index.js";
import { startDelayingProxy, type DelayingProxy } from "./delaying-proxy.js";

/** What a replica's admin API says of a node, or undefined when it does not list it. */
async function seen(replica: AdminHandle, id: string): Promise<{ replica?: string } | undefined> {
  const res = await replica.call("GET", `/api/v1/fleet/${id}`);
  return res.status === 200 ? res.json : undefined;
}

/**
 * Two replicas on one Redis, one of them a process that is killed: the nodes it had stay in the
 * fleet view until its entry expires, and a node that reconnects elsewhere shows there at once.
 */
describe("the fleet view across replicas", () => {
  let redis: RedisServer;
  let a: AdminHandle;
  let b: ChildProcess;
  let proxy: DelayingProxy;
  const clients: XdsClient[] = [];
  let bXdsPort: number;

  beforeAll(async () => {
    redis = await startRedis();
    a = await startAdmin({ store: redis.url });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-fleet-"));
    const tokensFile = path.join(dir, "tokens.json");
    fs.writeFileSync(
      tokensFile,
      JSON.stringify([{ name: "ci", role: "admin", sha256: hashToken(ADMIN_TOKEN) }]),
    );
    const [adminPort, xdsPort] = (await freePorts(2)) as [number, number];
    bXdsPort = xdsPort;
    b = await spawnControlPlane({ store: redis.url, tokensFile, adminPort, xdsPort });
    proxy = await startDelayingProxy(bXdsPort, 0);
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    b?.kill("SIGKILL");
    await proxy?.close();
    await a?.stop();
    await redis?.stop();
  });

  const node = (id: string, port: number, reconnect: boolean) => {
    const c = new XdsClient({
      target: `127.0.0.1:${port}`,
      node: { id, cluster: "edge" },
      protocol: "delta",
      reconnect,
    });
    c.on("error", () => undefined);
    c.subscribe(TypeUrl.Listener);
    clients.push(c);
    return c;
  };

  it("keeps a dead replica's nodes until its entry expires; a node that reconnects shows on its new replica", async () => {
    node("moves", proxy.port, true);
    node("stays", bXdsPort, false);
    const ownReplica = (await a.call("GET", "/api/v1/fleet")).json.replica as string;
    const onB = await waitFor(
      async () => {
        const [m, s] = [await seen(a, "moves"), await seen(a, "stays")];
        return m && s && m.replica === s.replica ? m.replica : undefined;
      },
      { what: "replica A to list both nodes connected to B", timeoutMs: 10_000 },
    );
    expect(onB).not.toBe(ownReplica);

    // B dies without a word; the node behind the proxy reconnects to A.
    proxy.retarget(a.cp.xdsPort);
    b.kill("SIGKILL");
    proxy.cut();
    await waitFor(async () => ((await seen(a, "moves"))?.replica === ownReplica ? true : undefined), {
      what: "the node that reconnected to show on replica A",
      timeoutMs: 15_000,
    });
    // The node left on B is still listed (its replica's entry has not expired yet), then goes.
    expect((await seen(a, "stays"))?.replica).toBe(onB);
    await waitFor(async () => ((await seen(a, "stays")) === undefined ? true : undefined), {
      what: "the dead replica's node to expire from the fleet view",
      timeoutMs: 30_000,
      intervalMs: 250,
    });
    expect((await a.call("GET", "/api/v1/fleet")).json.replicas).toEqual([]);
  });
});
