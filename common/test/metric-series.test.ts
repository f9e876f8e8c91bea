import { Counter, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { SeriesCounter, SeriesHistogram } from "../src/metric-series.js";

// Series held as plain numbers must read, when scraped, exactly as prom-client's own metrics fed
// the same values.

describe("metric series", () => {
  it("a SeriesCounter scrapes as a Counter counted the same way, series made once", async () => {
    const [a, b] = [new Registry(), new Registry()];
    const held = new SeriesCounter({ name: "t_total", help: "h", labelNames: ["code"], registers: [a] });
    const plain = new Counter({ name: "t_total", help: "h", labelNames: ["code"], registers: [b] });
    const ok = held.for({ code: "ok" });
    expect(held.for({ code: "ok" })).toBe(ok);
    for (const [code, by] of [
      ["ok", 1],
      ["ok", 3],
      ["denied", 1],
      ["zero", 0],
    ] as const) {
      held.for({ code }).inc(by);
      plain.inc({ code }, by);
    }
    expect(await a.metrics()).toBe(await b.metrics());
    ok.inc(2);
    plain.inc({ code: "ok" }, 2);
    // Read twice: the second read adds nothing twice.
    expect(await a.metrics()).toBe(await b.metrics());
    expect(await a.metrics()).toBe(await b.metrics());
    expect((await held.get()).values).toEqual((await plain.get()).values);
  });

  it("a SeriesHistogram scrapes as a Histogram that observed the same values", async () => {
    const [a, b] = [new Registry(), new Registry()];
    const buckets = [0.001, 0.01, 0.1];
    const held = new SeriesHistogram({
      name: "d_seconds",
      help: "h",
      labelNames: ["result"],
      buckets,
      registers: [a],
    });
    const plain = new Histogram({
      name: "d_seconds",
      help: "h",
      labelNames: ["result"],
      buckets,
      registers: [b],
    });
    for (const [result, v] of [
      ["allow", 0.0005],
      ["allow", 0.001],
      ["allow", 0.05],
      ["deny", 3],
    ] as const) {
      held.for({ result }).observe(v);
      plain.observe({ result }, v);
    }
    expect(await a.metrics()).toBe(await b.metrics());
    expect((await held.get()).values).toEqual((await plain.get()).values);
    held.reset();
    plain.reset();
    expect(await a.metrics()).toBe(await b.metrics());
  });
});
