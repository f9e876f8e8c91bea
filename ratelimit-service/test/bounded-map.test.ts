import { describe, expect, it } from "vitest";
import { BoundedMap } from "@portico/common";
import { ManualClock } from "../src/limiter/clock.js";
import { MemoryLimiter } from "../src/limiter/memory.js";
import { matchDescriptor } from "../src/config/match.js";
import { yamlConfig } from "./helpers.js";

describe("per-key state keyed by request data is bounded", () => {
  it("keeps at most maxEntries keys, drops those unused longest, and says which", () => {
    const dropped: string[] = [];
    const m = new BoundedMap<string, number>(4, (k) => dropped.push(k));
    for (const k of ["a", "b"]) m.set(k, 1);
    for (const k of ["c", "d", "e", "f"]) {
      m.get("a"); // in use: survives the churn
      m.set(k, 1);
      expect(m.size).toBeLessThanOrEqual(4);
    }
    expect(m.peek("a")).toBe(1);
    expect(dropped).toContain("b");
    expect(dropped).not.toContain("a");
    for (let i = 0; i < 10_000; i++) m.set(`k${i}`, i);
    expect(m.size).toBeLessThanOrEqual(4);
    expect(dropped.length + m.size).toBe(10_006);
  });

  it("peek does not keep a key alive; get and set do", () => {
    const m = new BoundedMap<string, number>(2);
    m.set("a", 1);
    m.set("b", 2);
    m.peek("a");
    m.set("c", 3);
    m.set("d", 4);
    expect(m.peek("a")).toBeUndefined();
    expect(m.size).toBeLessThanOrEqual(2);
  });

  it("the memory limiter forgets the least recently used counters past maxKeys, and counts them", async () => {
    const config = yamlConfig(
      "domain: edge\ndescriptors:\n  - key: api_key\n    rate_limit: { unit: minute, requests_per_unit: 3 }\n",
    );
    let evicted = 0;
    const limiter = new MemoryLimiter({
      clock: new ManualClock(Date.UTC(2030, 0, 1)),
      maxKeys: 100,
      onEvict: () => void evicted++,
    });
    const check = (value: string) => {
      const m = matchDescriptor(config, "edge", [{ key: "api_key", value }])!;
      return limiter.check([{ key: m.counterKey, limits: m.set.limits, hits: 1, countRefused: true }]);
    };
    let victimAdmitted = 0;
    for (let i = 0; i < 5_000; i++) {
      await check(`attacker-${i}`);
      // A caller who keeps calling keeps its counter: the flood does not reset it.
      if (i % 10 === 0 && (await check("victim"))[0]!.admitted) victimAdmitted++;
    }
    expect(victimAdmitted).toBe(3);
    expect(limiter.size()).toBeLessThanOrEqual(100);
    expect(evicted).toBe(limiter.evictions);
    expect(evicted).toBe(5_001 - limiter.size());
    await limiter.close();
  });
});
