import { describe, expect, it } from "vitest";
import { MemoryStaleStore } from "../src/compose/stale.js";

describe("the in-process stale store is bounded in bytes as well as entries", () => {
  it("drops the oldest answers once their bytes pass maxBytes, and counts them", async () => {
    let evicted = 0;
    const store = new MemoryStaleStore({ maxBytes: 10_000, onEvict: () => void evicted++ });
    const answer = (i: number) => ({ i, body: "x".repeat(1_000) });
    for (let i = 0; i < 100; i++) store.put(`k${i}`, answer(i), 60_000);
    expect(store.bytes).toBeLessThanOrEqual(10_000);
    expect(store.size).toBeLessThan(10);
    expect(evicted).toBe(100 - store.size);
    expect(await store.get("k0", 60_000)).toBeUndefined();
    expect((await store.get("k99", 60_000))?.value).toEqual(answer(99));
  });

  it("never keeps an answer larger than maxEntryBytes, and a replaced answer frees its bytes", async () => {
    const store = new MemoryStaleStore({ maxBytes: 1_000_000, maxEntryBytes: 1_000 });
    store.put("small", { a: 1 }, 60_000);
    store.put("huge", { blob: "y".repeat(5_000) }, 60_000);
    expect(await store.get("huge", 60_000)).toBeUndefined();
    const before = store.bytes;
    store.put("small", { a: 2 }, 60_000);
    expect(store.bytes).toBe(before);
    store.put("small", { blob: "y".repeat(5_000) }, 60_000);
    expect(store.size).toBe(0);
    expect(store.bytes).toBe(0);
  });
});
