import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { Authorizer, sha256Hex } from "@portico/ext-authz";
import { buildConfig, matchDescriptor, MemoryLimiter, ManualClock } from "@portico/ratelimit-service";
import { MemoryStaleStore } from "@portico/aggregator";
import { policyOf, request } from "../harness/ext-authz-fixtures.js";
import { AUDIENCE, claims, hmacKey, ISSUER, signJwt } from "../harness/jwt-keys.js";

/** A million keys an attacker made up, one per request. */
const ATTACKER_KEYS = 1_000_000;
const MB = 1024 * 1024;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Live heap after a full collection, so garbage not yet collected does not count. */
function liveHeap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/**
 * Every map keyed by request data is bounded: a million distinct attacker keys leave the heap
 * within a stated cap, and the state that was pushed out is counted.
 */
describe("memory stays bounded whatever keys callers invent", () => {
  it("the rate limiter: 1,000,000 distinct keys grow the heap by less than 96 MB", () => {
    const config = buildConfig([
      {
        file: "bounds.yaml",
        text: "domain: edge\ndescriptors:\n  - key: api_key\n    rate_limit: { unit: minute, requests_per_unit: 10 }\n",
      },
    ]);
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const limiter = new MemoryLimiter({ clock });
    const before = liveHeap();
    const now = clock.now();
    let grown = 0;
    let peakKeys = 0;
    for (let i = 0; i < ATTACKER_KEYS; i++) {
      const m = matchDescriptor(config, "edge", [{ key: "api_key", value: `attacker-${i}` }])!;
      limiter.checkNow([{ key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true }], now);
      // Just before the oldest half is dropped, when the most keys are held.
      if (i % 100_000 === 99_998) {
        grown = Math.max(grown, liveHeap() - before);
        peakKeys = Math.max(peakKeys, limiter.size());
      }
    }
    console.log(
      `rate limiter: at most ${peakKeys} keys, ${limiter.evictions} evicted, heap at most +${(grown / MB).toFixed(1)} MB`,
    );
    expect(peakKeys).toBeGreaterThan(190_000);
    expect(peakKeys).toBeLessThanOrEqual(200_000);
    expect(limiter.evictions).toBe(ATTACKER_KEYS - limiter.size());
    expect(grown).toBeLessThan(96 * MB);
    void limiter.close();
  }, 120_000);

  it("ext-authz: 1,000,000 made-up API keys and 100,000 distinct valid tokens grow the heap by less than 32 MB", async () => {
    const hs = hmacKey("hs-1");
    const authz = new Authorizer({
      policy: policyOf({
        jwtProviders: [
          {
            name: "idp",
            issuer: ISSUER,
            audiences: [AUDIENCE],
            jwks: { keys: [hs.jwk] },
            algorithms: ["HS256"],
          },
        ],
        consumers: [{ name: "acme" }],
        apiKeys: [{ name: "acme-live", consumer: "acme", sha256: sha256Hex("pk_live_genuine") }],
        settings: { tokenCacheSize: 10_000 },
      }),
    });
    const ext = { accept: "apiKey,jwt", anonymous: "false" };
    const before = liveHeap();
    for (let i = 0; i < ATTACKER_KEYS; i++) {
      const d = await authz.check(request({ "x-api-key": `pk_attacker_${i}` }, { ext }));
      if (d.allowed) throw new Error(`made-up key ${i} was accepted`);
    }
    const now = Date.now();
    for (let i = 0; i < 100_000; i++) {
      const token = signJwt(hs, claims(now, { sub: `user-${i}` }));
      const d = await authz.check(request({ authorization: `Bearer ${token}` }, { ext }));
      if (!d.allowed) throw new Error(`token ${i} was refused: ${d.reason}`);
    }
    const grown = liveHeap() - before;
    const evicted = (await authz.metrics.cacheEvictions.get()).values.find(
      (v) => v.labels.cache === "jwt",
    )?.value;
    console.log(`ext-authz: ${evicted} cached tokens evicted, heap +${(grown / MB).toFixed(1)} MB`);
    expect(evicted).toBe(90_000);
    expect(grown).toBeLessThan(32 * MB);
  }, 120_000);

  it("the aggregator's stale store holds at most its bytes, however many or large the answers", () => {
    const store = new MemoryStaleStore({ maxBytes: 8 * MB });
    const before = liveHeap();
    const body = { items: "x".repeat(4096) };
    for (let i = 0; i < 100_000; i++) store.put(`route/part/${i}`, { ...body, i }, 60_000);
    store.put("huge", { blob: "y".repeat(2 * MB) }, 60_000);
    const grown = liveHeap() - before;
    expect(store.bytes).toBeLessThanOrEqual(8 * MB);
    expect(store.evictions).toBeGreaterThan(90_000);
    expect(grown).toBeLessThan(24 * MB);
  });
});
