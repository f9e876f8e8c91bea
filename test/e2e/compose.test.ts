// The deployment end to end: deploy/docker-compose.yml on a Docker engine when there is one,
// otherwise the same services and seed as local processes (test/harness/containers.ts). Either
// way the run says which, in the log and in every test's name, so a native run is never taken
// for a container one.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  chooseStackMode,
  DEMO_API_KEY,
  startGatewayStack,
  type GatewayStack,
} from "../harness/containers.js";
import { httpRequest, type HttpResponse } from "../harness/http.js";

const choice = await chooseStackMode();
console.log(`[e2e] backend: ${choice.mode} (${choice.reason})`);

describe(`the compose deployment (${choice.mode})`, () => {
  let stack: GatewayStack;
  const key = { "x-api-key": DEMO_API_KEY };
  const get = (url: string, headers: Record<string, string> = {}) =>
    httpRequest(url, { headers, timeoutMs: 5000 });
  const admin = (method: string, p: string, body?: unknown) =>
    httpRequest(`${stack.adminUrl}${p}`, {
      method,
      headers: { authorization: `Bearer ${stack.adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      timeoutMs: 20_000,
    });

  beforeAll(async () => {
    stack = await startGatewayStack(choice);
  }, 20 * 60_000);

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail" && stack) console.error(`[e2e] logs:\n${await stack.logs()}`);
  });

  afterAll(async () => {
    await stack?.stop();
    if (stack) console.log(`[e2e] ${stack.mode} timings (s): ${JSON.stringify(stack.timings)}`);
  }, 120_000);

  it("routes through the edge and the sidecars, and through the bff-web group", async () => {
    const users = await get(`${stack.edgeUrl}/users/1`);
    expect(users.status).toBe(200);
    expect(users.json()).toMatchObject({ service: "users", path: "/users/1" });
    const web = await get(`${stack.bffWebUrl}/web/users/1`);
    expect(web.status).toBe(200);
    // bff-web rewrites /web/users to the service's own /users.
    expect(web.json()).toMatchObject({ service: "users", path: "/users/1" });
  });

  it("authorises with the demo API key, and refuses a caller without one", async () => {
    const anonymous = await get(`${stack.edgeUrl}/orders/1`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers["www-authenticate"]).toBeDefined();
    const wrong = await get(`${stack.edgeUrl}/orders/1`, { "x-api-key": "pk_demo_portico_wrongwrongwrong0" });
    expect(wrong.status).toBe(401);
    const withKey = await get(`${stack.edgeUrl}/orders/1`, key);
    expect(withKey.status).toBe(200);
    // Through the edge and the orders sidecar, which keeps the identity the edge authenticated.
    expect(withKey.json()).toMatchObject({ service: "orders", consumer: "demo" });
    // A forged identity is replaced by the authenticated one, sidecar or not.
    const forged = await get(`${stack.edgeUrl}/orders/1`, { ...key, "x-portico-consumer": "admin" });
    expect(forged.json()).toMatchObject({ service: "orders", consumer: "demo" });
  });

  it("answers a composite route through the aggregator", async () => {
    const home = await get(`${stack.edgeUrl}/home`, key);
    expect(home.status).toBe(200);
    expect(home.json()).toMatchObject({ user: { service: "users" }, orders: { service: "orders" } });
  });

  it("serves a route added through the admin API as soon as ?wait=applied answers", async () => {
    const route = {
      name: "e2e-live",
      gateway: "edge",
      match: { path: "/e2e-live" },
      directResponse: { status: 200, body: "live\n" },
    };
    const put = await admin("PUT", "/api/v1/routes/e2e-live?wait=applied&timeout=20s", route);
    expect(put.status, put.body).toBeLessThan(300);
    expect(put.headers["portico-applied"]).toBe("true");
    // No retry: the answer came once every edge Envoy had applied the change.
    const live = await get(`${stack.edgeUrl}/e2e-live`);
    expect(live.status).toBe(200);
    expect(live.body).toBe("live\n");

    const del = await admin("DELETE", "/api/v1/routes/e2e-live?wait=applied&timeout=20s");
    expect(del.status, del.body).toBeLessThan(300);
    expect((await get(`${stack.edgeUrl}/e2e-live`)).status).toBe(404);
  });

  it("counts per key and per IP: a 429 with Retry-After after the limit", async () => {
    // Last, so the refusals it provokes cannot fail the others. 5/s per key and 2/s per anonymous
    // IP: a burst of 12 at once crosses either within one window, unless it straddles a second
    // boundary, hence a few tries.
    for (const [path, headers] of [
      ["/orders/1", key],
      ["/users/1", {}],
    ] as const) {
      let refused: HttpResponse | undefined;
      for (let attempt = 0; attempt < 5 && !refused; attempt++) {
        const burst = await Promise.all(
          Array.from({ length: 12 }, () => get(`${stack.edgeUrl}${path}`, headers)),
        );
        expect(burst.map((r) => r.status).filter((s) => s !== 200 && s !== 429)).toEqual([]);
        refused = burst.find((r) => r.status === 429);
      }
      expect(refused, `no 429 on ${path}`).toBeDefined();
      expect(refused!.headers["retry-after"]).toBeDefined();
    }
  });
});
