import { Counter, Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOpsServer, type OpsServer } from "../src/ops-server.js";

describe("ops server", () => {
  const registry = new Registry();
  new Counter({ name: "portico_test_total", help: "a counter", registers: [registry] }).inc(3);
  let ready: true | string = "waiting for config";
  let ops: OpsServer;
  const get = (p: string, method = "GET") => fetch(`http://127.0.0.1:${ops.port}${p}`, { method });

  beforeAll(async () => {
    ops = await startOpsServer({ host: "127.0.0.1", port: 0, registry, readiness: () => ready });
  });
  afterAll(() => ops.close());

  it("serves the registry at /metrics", async () => {
    const res = await get("/metrics");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe(registry.contentType);
    expect(await res.text()).toMatch(/^portico_test_total 3$/m);
  });

  it("is alive while not ready, and ready once the service says so", async () => {
    expect((await get("/healthz")).status).toBe(200);
    const notReady = await get("/readyz");
    expect(notReady.status).toBe(503);
    expect(await notReady.text()).toBe("waiting for config\n");
    ready = true;
    expect((await get("/readyz")).status).toBe(200);
    expect((await get("/readyz?verbose=1")).status).toBe(200);
  });

  it("answers 404 for other paths and 405 for other methods", async () => {
    expect((await get("/")).status).toBe(404);
    expect((await get("/metrics", "POST")).status).toBe(405);
  });
});
