import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { freePorts, runControlPlaneUntil } from "@portico/testing";
import { IdleReleasePolicy, releaseNow } from "../src/idle-release.js";

describe("the idle release policy", () => {
  const feed = (policy: IdleReleasePolicy, xs: number[]) => xs.map((u) => policy.next(u));

  it("releases once the loop has been quiet for the samples asked for after a busy spell, once", () => {
    const p = new IdleReleasePolicy(0.25, 0.05, 2);
    expect(feed(p, [0.01, 0.02, 0.9, 0.6, 0.1, 0.04, 0.2, 0.04, 0.01, 0.0, 0.0])).toEqual([
      false, // idle, but nothing happened before: nothing to give back
      false,
      false, // busy
      false,
      false, // calmer, not quiet
      false, // quiet, one sample
      false, // not quiet: the count starts again
      false,
      true, // two quiet samples in a row
      false, // released already
      false,
    ]);
    expect(feed(p, [0.3, 0.01, 0.5, 0.01, 0.01])).toEqual([false, false, false, false, true]);
    const once = new IdleReleasePolicy(0.25, 0.05, 1);
    expect(feed(once, [0.3, 0.01])).toEqual([false, true]);
  });

  it("never releases while the loop stays busy", () => {
    const p = new IdleReleasePolicy(0.25, 0.05, 2);
    expect(
      feed(
        p,
        Array.from({ length: 50 }, (_, i) => 0.06 + (i % 5) / 10),
      ),
    ).not.toContain(true);
  });

  it("refuses thresholds that cannot work, naming them", () => {
    expect(() => new IdleReleasePolicy(0.05, 0.25, 2)).toThrow(/idleBelow \(0\.25\) ≤ busyAt \(0\.05\)/);
    expect(() => new IdleReleasePolicy(0.5, 0, 2)).toThrow(/0 < idleBelow/);
    expect(() => new IdleReleasePolicy(0.25, 0.05, 0)).toThrow(
      /quietSamples must be a positive integer, got 0/,
    );
  });

  it("runs V8's last-resort collection in a process started without --expose-gc", () => {
    expect(process.execArgv).not.toContain("--expose-gc");
    const r = releaseNow();
    expect(r.rssBefore).toBeGreaterThan(0);
    expect(r.rssAfter).toBeGreaterThan(0);
    expect(r.ms).toBeGreaterThan(0);
  });
});

describe("the control plane process", () => {
  async function start(extra: string[], until: (out: string) => boolean) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-idle-"));
    // A config large enough that translating it keeps the event loop busy for a while.
    const config = {
      gateways: [{ name: "big", listeners: [{ name: "http", port: 10_080, address: "127.0.0.1" }] }],
      upstreams: Array.from({ length: 200 }, (_, k) => ({
        name: `up-${k}`,
        endpoints: [{ host: "127.0.0.1", port: 20_000 + k }],
      })),
      routes: Array.from({ length: 3000 }, (_, i) => ({
        name: `r-${i}`,
        gateway: "big",
        match: { pathPrefix: `/svc-${i}/` },
        upstream: `up-${i % 200}`,
      })),
    };
    fs.writeFileSync(path.join(dir, "portico.json"), JSON.stringify(config));
    const [adminPort, xdsPort] = await freePorts(2);
    try {
      const out = await runControlPlaneUntil(
        [
          ...["--config", path.join(dir, "portico.json"), "--store", `file:${path.join(dir, "store")}`],
          ...["--tokens-file", path.join(dir, "tokens.json")],
          ...["--admin-port", String(adminPort), "--xds-port", String(xdsPort), ...extra],
        ],
        { LOG_LEVEL: "debug" },
        (o) => until(o.stdout + o.stderr),
        30_000,
      );
      return { text: out.stdout + out.stderr, code: out.code };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it("gives memory back once the start-up's translation is over", async () => {
    const out = await start([], (t) => t.includes("returned memory after a busy spell"));
    const line = out.text.split("\n").find((l) => l.includes("returned memory after a busy spell"));
    expect(line, out.text.slice(-2000)).toBeDefined();
    const fields = JSON.parse(line!) as { freedMiB: number; ms: number };
    expect(typeof fields.freedMiB).toBe("number");
    expect(fields.ms).toBeGreaterThanOrEqual(0);
  });

  it("refuses an --idle-release that is neither on nor off", async () => {
    const out = await start(["--idle-release", "sometimes"], () => false);
    expect(out.code).toBe(1);
    const fatal = out.text
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .find((l) => l.level === 60);
    expect(fatal?.msg).toBe('--idle-release (PORTICO_IDLE_RELEASE): "on" or "off", not "sometimes"');
  });
});
