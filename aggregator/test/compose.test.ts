import { describe, expect, it } from "vitest";
import type { PartCaller, PartRequest } from "../src/compose/call.js";
import { fanOut, type Incoming, type PartResult } from "../src/compose/fanout.js";
import { merge } from "../src/compose/merge.js";
import { MemoryStaleStore } from "../src/compose/stale.js";
import { compileRoutes, type CompiledRoute } from "../src/config/compile.js";

function routeOf(parts: object[], timeoutMs = 1000): CompiledRoute {
  const c = compileRoutes([
    {
      at: "r",
      value: {
        name: "home",
        match: { path: "/users/{id}/home" },
        timeoutMs,
        partsUrl: "http://envoy:10001",
        parts,
      },
    },
  ]);
  if (!c.ok) throw new Error(JSON.stringify(c.problems));
  return c.value.routes.get("home")!;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

/** Answers each part by the upstream named in its marker, after that upstream's delay. */
function fakeEnvoy(
  behaviour: Record<string, { delayMs?: number; status?: number; body?: string }>,
  seen: PartRequest[] = [],
): PartCaller {
  return async (req) => {
    seen.push(req);
    const key = req.headers["x-portico-part"]!.split("/")[1]!;
    const b = behaviour[key] ?? {};
    await sleep(b.delayMs ?? 0, req.signal);
    return { status: b.status ?? 200, body: b.body ?? JSON.stringify({ from: key, url: req.url }) };
  };
}

function incoming(headers: Record<string, string> = {}, signal = new AbortController().signal): Incoming {
  return { params: { id: "42" }, header: (h) => headers[h], signal };
}

const PARTS = [
  { key: "profile", upstream: "users", path: "/users/{id}", timeoutMs: 300, required: true },
  { key: "orders", upstream: "orders", path: "/orders?user={id}", timeoutMs: 300 },
  { key: "recs", upstream: "recs", path: "/recs/{header.x-portico-consumer}", timeoutMs: 300 },
];
const WHO = {
  "x-portico-consumer": "acme",
  "x-portico-plan": "gold",
  "x-request-id": "req-1",
  "x-portico-parts-token": "token-from-envoy",
  cookie: "s=1",
};

describe("fan-out", () => {
  it("calls every part through the parts listener with the identity and request id, and merges the answers", async () => {
    const seen: PartRequest[] = [];
    const results = await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({}, seen),
      stale: new MemoryStaleStore(),
    });
    const answer = merge(results, "req-1");
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual({
      profile: { from: "profile", url: "http://envoy:10001/users/42" },
      orders: { from: "orders", url: "http://envoy:10001/orders?user=42" },
      recs: { from: "recs", url: "http://envoy:10001/recs/acme" },
    });
    expect(answer.headers["x-portico-partial"]).toBeUndefined();
    for (const req of seen) {
      expect(req.headers).toMatchObject({
        "x-portico-consumer": "acme",
        "x-portico-plan": "gold",
        "x-request-id": "req-1",
        // The token Envoy set: without it the parts listener believes no identity.
        "x-portico-parts-token": "token-from-envoy",
      });
      // Only identity, tracing and the parts token pass on: the client's cookies stay with the client.
      expect(req.headers.cookie).toBeUndefined();
    }
    expect(seen.map((r) => r.headers["x-portico-part"]).sort()).toEqual([
      "home/orders",
      "home/profile",
      "home/recs",
    ]);
  });

  it("runs the parts in parallel: the whole takes about the slowest part, not the sum", async () => {
    const started = performance.now();
    const results = await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({ profile: { delayMs: 150 }, orders: { delayMs: 150 }, recs: { delayMs: 150 } }),
      stale: new MemoryStaleStore(),
    });
    const took = performance.now() - started;
    expect(results.every((r) => r.state === "ok")).toBe(true);
    expect(took).toBeGreaterThanOrEqual(145);
    expect(took).toBeLessThan(300);
  });

  it("cuts a slow optional part at its deadline and names it; the others still answer", async () => {
    const started = performance.now();
    const results = await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({ orders: { delayMs: 5_000 } }),
      stale: new MemoryStaleStore(),
    });
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(295);
    expect(took).toBeLessThan(1_000);
    expect(results.find((r) => r.key === "orders")).toMatchObject({ state: "failed", reason: "timeout" });
    const answer = merge(results);
    expect(answer.status).toBe(200);
    expect(answer.headers["x-portico-partial"]).toBe("orders");
    expect(answer.headers["x-portico-degraded"]).toBe("partial");
    expect(answer.headers["cache-control"]).toBe("no-store");
    expect(answer.body._missing).toEqual(["orders"]);
    expect(Object.keys(answer.body).sort()).toEqual(["_missing", "profile", "recs"]);
  });

  it("fails the call when a required part fails: 504 on its deadline, 502 on an error, 400 on a missing header", async () => {
    const stale = new MemoryStaleStore();
    const timedOut = merge(
      await fanOut(routeOf(PARTS), incoming(WHO), {
        caller: fakeEnvoy({ profile: { delayMs: 5_000 } }),
        stale,
      }),
      "req-9",
    );
    expect(timedOut.status).toBe(504);
    expect(timedOut.body).toMatchObject({
      code: "part_timeout",
      part: "profile",
      failed: ["profile"],
      request_id: "req-9",
    });
    const failed = merge(
      await fanOut(routeOf(PARTS), incoming(WHO), { caller: fakeEnvoy({ profile: { status: 503 } }), stale }),
    );
    expect(failed.status).toBe(502);
    expect(failed.body).toMatchObject({ code: "part_failed", part: "profile" });
    expect(String(failed.body.message)).toContain("status 503");
    const required = PARTS.map((p) => (p.key === "recs" ? { ...p, required: true } : p));
    const anonymous = merge(await fanOut(routeOf(required), incoming({}), { caller: fakeEnvoy({}), stale }));
    expect(anonymous.status).toBe(400);
    expect(anonymous.body).toMatchObject({ code: "missing_input", part: "recs" });
  });

  it("answers as soon as a required part fails, cancelling the parts still running", async () => {
    const seen: PartRequest[] = [];
    const started = performance.now();
    const results = await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({ profile: { delayMs: 20, status: 503 }, orders: { delayMs: 5_000 } }, seen),
      stale: new MemoryStaleStore(),
    });
    const took = performance.now() - started;
    // The optional part's deadline is 300 ms: the answer does not wait for it.
    expect(took).toBeLessThan(200);
    expect(results.map((r) => [r.key, r.state, r.state === "ok" ? undefined : r.reason])).toEqual([
      ["profile", "failed", "upstream_status"],
      ["orders", "failed", "cancelled"],
      ["recs", "ok", undefined],
    ]);
    expect(seen.find((r) => r.headers["x-portico-part"] === "home/orders")!.signal.aborted).toBe(true);
    const answer = merge(results, "req-2");
    expect(answer.status).toBe(502);
    // A part stopped because the answer was decided did not fail.
    expect(answer.body).toMatchObject({ code: "part_failed", part: "profile", failed: ["profile"] });
  });

  it("treats an answer that is not JSON, or not 2xx, as a failure of that part", async () => {
    const results = await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({ orders: { body: "<html>" }, recs: { status: 404 } }),
      stale: new MemoryStaleStore(),
    });
    expect(results.map((r) => [r.key, r.state, r.state === "ok" ? undefined : r.reason])).toEqual([
      ["profile", "ok", undefined],
      ["orders", "failed", "invalid_json"],
      ["recs", "failed", "upstream_status"],
    ]);
  });

  it("stops waiting for the parts when the client goes away, and serves nothing stale for it", async () => {
    const gone = new AbortController();
    const parts = PARTS.map((p) => ({ ...p, staleFallback: { maxAgeSeconds: 60 } }));
    setTimeout(() => gone.abort(), 50);
    const started = performance.now();
    const results = await fanOut(routeOf(parts), incoming(WHO, gone.signal), {
      caller: fakeEnvoy({
        profile: { delayMs: 5_000 },
        orders: { delayMs: 5_000 },
        recs: { delayMs: 5_000 },
      }),
      stale: new MemoryStaleStore(),
    });
    expect(performance.now() - started).toBeLessThan(250);
    expect(results.every((r) => r.state === "failed" && r.reason === "cancelled")).toBe(true);
  });

  it("reports every part's result to the observer", async () => {
    const seen: [string, PartResult][] = [];
    await fanOut(routeOf(PARTS), incoming(WHO), {
      caller: fakeEnvoy({ recs: { status: 500 } }),
      stale: new MemoryStaleStore(),
      observer: { part: (route, r) => seen.push([route, r]) },
    });
    expect(seen.map(([route, r]) => `${route}/${r.key}:${r.state}`).sort()).toEqual([
      "home/orders:ok",
      "home/profile:ok",
      "home/recs:failed",
    ]);
  });
});

describe("stale fallback", () => {
  const parts = PARTS.map((p) => (p.key === "orders" ? { ...p, staleFallback: { maxAgeSeconds: 60 } } : p));

  it("serves a failed part's last good answer, marked, and only to the same caller", async () => {
    let now = 1_000_000;
    const stale = new MemoryStaleStore({ now: () => now });
    const route = routeOf(parts);
    const good = merge(await fanOut(route, incoming(WHO), { caller: fakeEnvoy({}), stale }));
    expect(good.status).toBe(200);

    now += 30_000;
    const down = fakeEnvoy({ orders: { status: 503 } });
    const degraded = merge(await fanOut(route, incoming(WHO), { caller: down, stale }));
    expect(degraded.status).toBe(200);
    expect(degraded.body.orders).toEqual(good.body.orders);
    expect(degraded.body._stale).toEqual(["orders"]);
    expect(degraded.body._missing).toBeUndefined();
    expect(degraded.headers["x-portico-stale"]).toBe("orders");
    expect(degraded.headers["x-portico-degraded"]).toBe("stale");

    // Another consumer never sees acme's orders.
    const other = merge(
      await fanOut(route, incoming({ ...WHO, "x-portico-consumer": "globex" }), { caller: down, stale }),
    );
    expect(other.body.orders).toBeUndefined();
    expect(other.body._missing).toEqual(["orders"]);

    // Past maxAgeSeconds the answer is too old to stand in.
    now += 31_000;
    const expired = merge(await fanOut(route, incoming(WHO), { caller: down, stale }));
    expect(expired.body._missing).toEqual(["orders"]);
    expect(expired.body._stale).toBeUndefined();
  });

  it("lets a required part stand on its last good answer instead of failing the call", async () => {
    const stale = new MemoryStaleStore();
    const route = routeOf(
      PARTS.map((p) => (p.required ? { ...p, staleFallback: { maxAgeSeconds: 60 } } : p)),
    );
    await fanOut(route, incoming(WHO), { caller: fakeEnvoy({}), stale });
    const answer = merge(
      await fanOut(route, incoming(WHO), { caller: fakeEnvoy({ profile: { delayMs: 5_000 } }), stale }),
    );
    expect(answer.status).toBe(200);
    expect(answer.body._stale).toEqual(["profile"]);
  });

  it("keeps a bounded number of answers, dropping the least recently stored", async () => {
    const store = new MemoryStaleStore({ maxEntries: 2 });
    store.put("a", 1, 60_000);
    store.put("b", 2, 60_000);
    store.put("a", 3, 60_000);
    store.put("c", 4, 60_000);
    expect(store.size).toBe(2);
    expect(await store.get("b", 60_000)).toBeUndefined();
    expect((await store.get("a", 60_000))?.value).toBe(3);
    expect((await store.get("c", 60_000))?.value).toBe(4);
  });
});
