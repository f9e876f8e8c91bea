import { describe, expect, it } from "vitest";
import { LogBudget } from "../src/log-budget.js";
import { manualClock } from "@portico/testing";

describe("refusal logs are sampled", () => {
  it("writes at most N lines a second and says how many it left out", () => {
    const clock = manualClock(0);
    let dropped = 0;
    const budget = new LogBudget(3, clock.now, () => void dropped++);
    const taken = Array.from({ length: 1_000 }, () => budget.take());
    expect(taken.filter((t) => t !== undefined)).toEqual([{ dropped: 0 }, { dropped: 0 }, { dropped: 0 }]);
    expect(dropped).toBe(997);
    clock.advance(1_000);
    expect(budget.take()).toEqual({ dropped: 997 });
    expect(budget.take()).toEqual({ dropped: 0 });
  });
});
