import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "@portico/envoy";
import { COMPOSITE_ROUTE_TYPE_URL } from "@portico/contract";
import { freePort, startAdmin, waitFor, type AdminHandle } from "@portico/testing";
import type { AggregatorConfig } from "../src/config/compile.js";
import { XdsConfigSource } from "../src/config/xds-source.js";

const route = (timeoutMs: number, partTimeoutMs: number) => ({
  name: "home",
  gateway: "edge",
  match: { path: "/users/{id}/home" },
  timeoutMs,
  parts: [{ key: "profile", upstream: "users", path: "/users/{id}", timeoutMs: partTimeoutMs }],
});

/** The aggregator as an xDS client: versioned config, and a refusal that is visible and harmless. */
describe("composite routes over xDS", () => {
  let api: AdminHandle;
  let source: XdsConfigSource | undefined;
  const configs: AggregatorConfig[] = [];
  const rejected: string[] = [];
  const node = async () =>
    (await api.call("GET", "/api/v1/status")).json.nodes.find((n: any) => n.id === "aggregator-x");

  beforeAll(async () => {
    // The aggregator's own rules off in the control plane, so a route only the aggregator refuses reaches it.
    api = await startAdmin({ skipSemanticChecks: true });
    const put = async (p: string, body: object) =>
      expect((await api.call("PUT", p, { body })).status).toBeLessThan(300);
    await put("/api/v1/upstreams/users", { name: "users", endpoints: [{ host: "127.0.0.1", port: 9 }] });
    await put("/api/v1/upstreams/agg", { name: "agg", endpoints: [{ host: "127.0.0.1", port: 8090 }] });
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port: 10000 }],
      aggregator: { upstream: "agg", partsListener: { port: 10001 } },
    });
    await put("/api/v1/compositeRoutes/home", route(1000, 500));
  });

  afterAll(async () => {
    source?.close();
    await api?.stop();
  });

  it("receives the routes, with the parts listener's address, and ACKs them", async () => {
    source = new XdsConfigSource({
      target: `127.0.0.1:${api.cp.xdsPort}`,
      nodeId: "aggregator-x",
      protocol: "delta",
      onConfig: (c) => configs.push(c),
      onReject: (reason) => rejected.push(reason),
    });
    const c = await waitFor(() => configs[0], { what: "the first config" });
    const home = c.routes.get("home")!;
    expect(home.partsUrl).toBe("http://127.0.0.1:10001");
    expect(home.parts[0]!.timeoutMs).toBe(500);
    const n = await waitFor(
      async () => ((await node())?.types[COMPOSITE_ROUTE_TYPE_URL]?.ackedVersion ? node() : undefined),
      {
        what: "the ACK in /status",
      },
    );
    expect(n.group).toBe("portico:policy");
  });

  it("refuses a route it cannot run with a NACK naming the field, and keeps the running one", async () => {
    const res = await api.call("PUT", "/api/v1/compositeRoutes/home?wait=applied&timeout=10s", {
      body: route(1000, 1000),
    });
    expect(res.status).toBe(200);
    const mine = res.json.rollout.nodes.find((n: any) => n.id === "aggregator-x");
    expect(mine).toMatchObject({ state: "nacked", type: COMPOSITE_ROUTE_TYPE_URL });
    expect(mine.error).toContain(
      "xds:home.parts[0].timeoutMs: 1000 ms is not under the route's timeoutMs (1000 ms)",
    );
    expect((await node()).types[COMPOSITE_ROUTE_TYPE_URL].lastNack.message).toContain("parts[0].timeoutMs");
    expect(rejected).toHaveLength(1);
    expect(configs).toHaveLength(1);

    // A good route again is taken.
    const fixed = await api.call("PUT", "/api/v1/compositeRoutes/home?wait=applied&timeout=10s", {
      body: route(2000, 1000),
    });
    expect(fixed.json.rollout.nodes.find((n: any) => n.id === "aggregator-x").state).toBe("applied");
    expect(configs.at(-1)!.routes.get("home")!.timeoutMs).toBe(2000);
  });
});

/** `main.ts` as it is deployed: from a static file, or waiting for the control plane. */
describe("aggregator main", () => {
  const children: ChildProcess[] = [];
  const start = (args: string[]) => {
    const child = spawn(
      path.join(REPO_ROOT, "node_modules", ".bin", "tsx"),
      [path.join(REPO_ROOT, "aggregator", "src", "main.ts"), ...args],
      {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, LOG_LEVEL: "warn" },
      },
    );
    children.push(child);
    return child;
  };

  afterAll(async () => {
    for (const child of children) {
      if (child.exitCode !== null) continue;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
    }
  });

  it(
    "serves the example file at once, and waits for a first config from the control plane",
    { timeout: 120_000 },
    async () => {
      const [filePort, xdsPort] = [await freePort(), await freePort()];
      start([
        "--config",
        path.join(REPO_ROOT, "aggregator", "examples", "aggregator.yaml"),
        "--listen",
        `127.0.0.1:${filePort}`,
      ]);
      const ready = await waitFor(
        async () => {
          const r = await fetch(`http://127.0.0.1:${filePort}/readyz`);
          return r.status === 200 ? r : undefined;
        },
        { what: "readiness from the file", timeoutMs: 40_000 },
      );
      expect(await ready.text()).toBe("ready\n");
      const metrics = await (await fetch(`http://127.0.0.1:${filePort}/metrics`)).text();
      expect(metrics).toContain('portico_aggregator_config_updates_total{result="accepted"} 1');

      // No control plane at that address yet: alive, but not ready.
      const xdsListen = await freePort();
      start(["--xds", `127.0.0.1:${xdsPort}`, "--listen", `127.0.0.1:${xdsListen}`]);
      const waiting = await waitFor(
        async () => {
          const r = await fetch(`http://127.0.0.1:${xdsListen}/readyz`);
          return r.status === 503 ? r : undefined;
        },
        { what: "a live but unready aggregator", timeoutMs: 40_000 },
      );
      expect(await waiting.text()).toBe("waiting for config\n");
      expect((await fetch(`http://127.0.0.1:${xdsListen}/healthz`)).status).toBe(200);

      // Neither a file nor a control plane: it says so and exits.
      const bad = start(["--listen", "127.0.0.1:1"]);
      let output = "";
      bad.stdout!.on("data", (d: Buffer) => (output += d.toString()));
      const code = await new Promise<number | null>((r) => bad.once("exit", r));
      expect(output).toContain("give either --config <file> or --xds <host:port>");
      expect(code).toBe(1);
    },
  );
});
