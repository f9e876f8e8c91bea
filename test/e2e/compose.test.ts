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
import { checkShellSnippet, failures } from "../readme/check.js";
import { readmeSnippets } from "../readme/snippets.js";

/** Resolves just after the next whole second, where the rate limiter's one-second windows start. */
const atNextSecond = () => new Promise((resolve) => setTimeout(resolve, 1005 - (Date.now() % 1000)));

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

  // Inside the deployment's network, as a process there would try: every internal port refuses a
  // client that lacks what it requires, and serves one that has it (so a refusal is not an outage).
  describe("internal ports refuse unauthenticated clients", () => {
    const CA = "--ca=/etc/portico/pki/ca.pem";
    const CERT = ["--cert=/etc/portico/pki/cert.pem", "--key=/etc/portico/pki/key.pem"];

    it("Redis refuses a client without the password, and answers the ACL user", async () => {
      expect(await stack.probe(["redis", "redis:6379"])).toEqual({
        outcome: "refused",
        detail: "-NOAUTH Authentication required.",
      });
      expect(
        await stack.probe(
          ["redis", "redis:6379", "--user=portico", "--password-file=/etc/portico/pki/redis-password"],
          "control-plane",
        ),
      ).toEqual({ outcome: "answered", detail: "+PONG" });
    });

    it("the xDS port refuses a client without a certificate, and serves a gateway's", async () => {
      const none = await stack.probe(["tls", "control-plane:18000", CA], "gateway-edge");
      expect(none).toMatchObject({ outcome: "refused", detail: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED" });
      expect(await stack.probe(["tls", "control-plane:18000", CA, ...CERT], "gateway-edge")).toMatchObject({
        outcome: "answered",
      });
    });

    it("the sidecars, which keep identity headers, answer gateways only", async () => {
      for (const sidecar of ["users-envoy:15001", "orders-envoy:15001"]) {
        expect(await stack.probe(["tls", sidecar, CA], "gateway-edge"), sidecar).toMatchObject({
          outcome: "refused",
          detail: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
        });
        // A certificate from the internal CA that names no gateway fails the handshake too.
        expect(await stack.probe(["tls", sidecar, CA, ...CERT], "aggregator"), sidecar).toMatchObject({
          outcome: "refused",
        });
        expect(await stack.probe(["tls", sidecar, CA, ...CERT], "gateway-bff-web"), sidecar).toMatchObject({
          outcome: "answered",
        });
      }
    });

    for (const [service, method] of [
      ["ext-authz:9191", "/envoy.service.auth.v3.Authorization/Check"],
      ["ratelimit:8081", "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"],
    ] as const) {
      it(`${service.split(":")[0]} refuses a direct call without a gateway certificate`, async () => {
        const call = (as: string, withCert: boolean) =>
          stack.probe(["grpc", service, `--method=${method}`, CA, ...(withCert ? CERT : [])], as);
        // No client certificate: the TLS handshake fails.
        expect(await call("gateway-edge", false)).toMatchObject({ outcome: "refused", code: 14 });
        // A certificate from the internal CA that names no gateway: refused by identity.
        const notGateway = await call("control-plane", true);
        expect(notGateway).toMatchObject({ outcome: "refused", code: 7 });
        expect(notGateway.detail).toMatch(/control plane/);
        // A gateway's certificate reaches the service itself.
        expect((await call("gateway-edge", true)).outcome).toBe("answered");
      });
    }
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

  it("answers the README's walkthrough as its comments say", { timeout: 120_000 }, async () => {
    const replacements = new Map([
      ["localhost:10000", stack.edgeUrl.replace("http://", "")],
      ["localhost:10100", stack.bffWebUrl.replace("http://", "")],
      ["localhost:9000", stack.adminUrl.replace("http://", "")],
      ["demo-admin-token", stack.adminToken],
    ]);
    const walkthroughs = readmeSnippets("compose");
    expect(walkthroughs.length).toBeGreaterThan(0);
    for (const snippet of walkthroughs) {
      // Its anonymous requests get a rate-limit window the tests before did not use.
      await atNextSecond();
      const results = await checkShellSnippet(snippet, {
        env: { ...process.env },
        replacements,
        // This suite builds, starts and stops the stack itself (and natively, without Docker).
        doneByHarness: (command) => /^(bash deploy\/images\/build-offline\.sh|docker-compose )/.test(command),
      });
      expect(failures(results)).toEqual([]);
    }
  });

  it("admits exactly the limit in a one-second window, per key and per IP, then 429 with Retry-After", async () => {
    // Last, so the refusals it provokes cannot fail the others. 5/s per key and 2/s per anonymous
    // IP, in fixed windows that start on the second: requests sent one after the other from the
    // start of a second, which nothing else used, fall in one window (checked), so the count is exact.
    for (const [path, headers, limit] of [
      ["/orders/1", key, 5],
      ["/users/1", {}, 2],
    ] as const) {
      await atNextSecond();
      const second = Math.floor(Date.now() / 1000);
      const answers: HttpResponse[] = [];
      for (let i = 0; i < limit + 3; i++) answers.push(await get(`${stack.edgeUrl}${path}`, headers));
      expect(Math.floor(Date.now() / 1000), `the requests to ${path} took more than the second`).toBe(second);
      expect(answers.map((r) => r.status)).toEqual([...Array<number>(limit).fill(200), 429, 429, 429]);
      expect(answers.at(-1)!.headers["retry-after"]).toBeDefined();
    }
  });
});
