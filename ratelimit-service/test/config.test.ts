import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../src/config/errors.js";
import { loadConfig } from "../src/config/load.js";
import { matchDescriptor } from "../src/config/match.js";
import { matchesWildcard, wildcardPattern } from "../src/config/wildcard.js";
import { yamlConfig } from "./helpers.js";

function issuesOf(text: string): { path: string; line?: number; reason: string; file: string }[] {
  try {
    yamlConfig(text, "bad.yaml");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return [...(err as ConfigError).issues];
  }
  throw new Error("the config loaded");
}

const entries = (...pairs: string[]) =>
  pairs.map((p) => ({ key: p.split("=")[0]!, value: p.split("=").slice(1).join("=") }));

describe("config errors", () => {
  it("name the file, the path, the line and the reason", () => {
    const issues = issuesOf(`domain: d
descriptors:
  - key: a
    rate_limit:
      unit: fortnight
      requests_per_unit: 5
  - key: b
    rate_limits:
      - unit: second
        requests_per_unit: -1
`);
    expect(issues).toEqual([
      expect.objectContaining({
        file: "bad.yaml",
        path: "descriptors[0].rate_limit.unit",
        line: 5,
        reason: expect.stringContaining("invalid rate limit unit 'fortnight'"),
      }),
      expect.objectContaining({
        path: "descriptors[1].rate_limits[0].requests_per_unit",
        line: 10,
        reason: expect.stringContaining("whole number"),
      }),
    ]);
    expect(() => yamlConfig("domain: d\ndescriptors: [{key: a, rate_limit: {unit: day}}]", "x.yaml")).toThrow(
      /x\.yaml:2: descriptors\[0\]\.rate_limit\.requests_per_unit: requests_per_unit is required/,
    );
  });

  it("refuse unknown keys, as upstream does, so a typo never drops a limit silently", () => {
    const issues = issuesOf(
      "domain: d\ndescriptors:\n  - key: a\n    rate_limt: {unit: second, requests_per_unit: 1}\n",
    );
    expect(issues[0]).toMatchObject({
      path: "descriptors[0].rate_limt",
      line: 4,
      reason: expect.stringContaining("unknown key"),
    });
  });

  it("refuse an empty domain, an empty key, duplicates and unlimited with a unit", () => {
    expect(issuesOf("descriptors: []")[0]!.reason).toMatch(/empty domain/);
    expect(issuesOf("domain: d\ndescriptors: [{value: x}]")[0]!.reason).toMatch(/empty key/);
    expect(issuesOf("domain: d\ndescriptors: [{key: a, value: x}, {key: a, value: x}]")[0]).toMatchObject({
      path: "descriptors[1]",
      reason: "duplicate descriptor composite key 'd.a_x'",
    });
    expect(
      issuesOf("domain: d\ndescriptors: [{key: a, rate_limit: {unlimited: true, unit: second}}]")[0]!.reason,
    ).toMatch(/should not specify rate limit unit when unlimited/);
    expect(issuesOf("domain: d\ndescriptors: [{key: a, share_threshold: true}]")[0]!.reason).toMatch(
      /wildcard/,
    );
    expect(
      issuesOf(
        "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1, replaces: [{}]}}]",
      )[0]!.reason,
    ).toMatch(/empty replaces/);
  });

  it("refuse extensions used wrongly", () => {
    const bad = (rl: string) => issuesOf(`domain: d\ndescriptors: [{key: a, rate_limit: ${rl}}]`)[0]!.reason;
    expect(bad("{unit: second, requests_per_unit: 1, window: 30s}")).toMatch(/either `window` or `unit`/);
    expect(bad("{window: 30x, requests_per_unit: 1}")).toMatch(/whole number followed by/);
    expect(bad("{unit: second, requests_per_unit: 1, calendar: true}")).toMatch(/calendar quotas count/);
    expect(bad("{unit: month, requests_per_unit: 1, time_zone: Europe/Paris}")).toMatch(
      /calendar quotas only/,
    );
    expect(bad("{unit: month, requests_per_unit: 1, calendar: true, time_zone: Mars/Olympus}")).toMatch(
      /unknown time zone/,
    );
    expect(bad("{unit: second, requests_per_unit: 1, burst: 5}")).toMatch(/token_bucket algorithm only/);
    expect(bad("{unit: second, requests_per_unit: 1, algorithm: leaky}")).toMatch(/unknown algorithm/);
    expect(bad("{unit: second, requests_per_unit: 0, algorithm: token_bucket}")).toMatch(/rate above 0/);
    expect(
      issuesOf(
        "domain: d\ndescriptors: [{key: a, rate_limits: [{unit: second, requests_per_unit: 1}, {unit: second, requests_per_unit: 5}]}]",
      )[0]!.reason,
    ).toMatch(/share a counter/);
    expect(
      issuesOf(
        "domain: d\ndescriptors: [{key: a, rate_limit: {unit: second, requests_per_unit: 1}, rate_limits: []}]",
      )[0]!.reason,
    ).toMatch(/not both/);
  });

  it("report a YAML syntax error with its line", () => {
    const issues = issuesOf("domain: d\ndescriptors:\n  - key: a\n   bad: [\n");
    expect(issues[0]!.file).toBe("bad.yaml");
    expect(issues[0]!.line).toBeGreaterThanOrEqual(3);
  });

  it("from a directory: every problem of every file, and duplicate domains across files", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rl-config-"));
    try {
      fs.writeFileSync(
        path.join(dir, "a.yaml"),
        "domain: one\ndescriptors: [{key: k, rate_limit: {unit: minute, requests_per_unit: 1}}]\n",
      );
      fs.writeFileSync(path.join(dir, "b.yml"), "domain: one\ndescriptors: []\n");
      fs.writeFileSync(
        path.join(dir, "c.yaml"),
        "domain: two\ndescriptors: [{key: k, rate_limit: {unit: eon}}]\n",
      );
      fs.writeFileSync(path.join(dir, "notes.txt"), "not a config");
      let error: ConfigError | undefined;
      try {
        loadConfig(dir);
      } catch (err) {
        error = err as ConfigError;
      }
      expect(error?.issues.map((i) => [path.basename(i.file), i.path])).toEqual([
        ["b.yml", "domain"],
        ["c.yaml", "descriptors[0].rate_limit.unit"],
        ["c.yaml", "descriptors[0].rate_limit.requests_per_unit"],
      ]);
      expect(error!.message).toContain("duplicate domain 'one'");
      expect(() => loadConfig(path.join(dir, "missing"))).toThrow(/cannot read/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("Portico extensions", () => {
  const config = yamlConfig(`
domain: ext
descriptors:
  - key: api_key
    rate_limits:
      - { unit: second, requests_per_unit: 1000, algorithm: token_bucket, burst: 2000 }
      - { unit: month, requests_per_unit: 1000000, calendar: true, time_zone: Europe/Paris, name: monthly }
  - key: window
    rate_limit: { window: 30s, requests_per_unit: 7 }
  - key: multiplier
    rate_limit: { unit: minute, unit_multiplier: 5, requests_per_unit: 9, algorithm: sliding_window }
  - key: plan_user
    count_refused: false
    plans:
      gold: { rate_limit: { unit: second, requests_per_unit: 100 } }
      free: { rate_limits: [ { unit: second, requests_per_unit: 1 }, { unit: day, requests_per_unit: 50, calendar: true } ] }
      staff: { rate_limit: { unlimited: true } }
    rate_limit: { unit: second, requests_per_unit: 5 }
`);

  it("several limits on one descriptor", () => {
    const m = matchDescriptor(config, "ext", entries("api_key=k1"))!;
    expect(
      m.set.limits.map((l) => [l.algorithm, l.requestsPerUnit, l.burst, l.calendar?.timeZone, l.metricName]),
    ).toEqual([
      ["token_bucket", 1000, 2000, undefined, "api_key[0]"],
      ["fixed_window", 1000000, 1000000, "Europe/Paris", "monthly"],
    ]);
  });

  it("any window length, by `window` or `unit_multiplier`", () => {
    const w = matchDescriptor(config, "ext", entries("window=x"))!.set.limits[0]!;
    expect([w.unit, w.unitMultiplier, w.windowMs]).toEqual(["second", 30, 30_000]);
    const m = matchDescriptor(config, "ext", entries("multiplier=x"))!.set.limits[0]!;
    expect([m.unit, m.unitMultiplier, m.windowMs, m.algorithm]).toEqual([
      "minute",
      5,
      300_000,
      "sliding_window",
    ]);
  });

  it("plans: the plan entry picks the limits and is not part of the counter", () => {
    const gold = matchDescriptor(config, "ext", entries("plan_user=u1", "plan=gold"))!;
    expect(gold.set.limits.map((l) => l.requestsPerUnit)).toEqual([100]);
    const free = matchDescriptor(config, "ext", entries("plan_user=u1", "plan=free"))!;
    expect(free.set.limits.map((l) => l.requestsPerUnit)).toEqual([1, 50]);
    expect(free.counterKey).toBe(gold.counterKey);
    expect(free.node.countRefused).toBe(false);
    expect(matchDescriptor(config, "ext", entries("plan_user=u1", "plan=staff"))!.set.unlimited).toBe(true);
    // Unknown or absent plan: the node's own limit.
    expect(
      matchDescriptor(config, "ext", entries("plan_user=u1", "plan=platinum"))!.set.limits[0]!
        .requestsPerUnit,
    ).toBe(5);
    expect(matchDescriptor(config, "ext", entries("plan_user=u1"))!.set.limits[0]!.requestsPerUnit).toBe(5);
  });
});

describe("matching", () => {
  const config = yamlConfig(`
domain: m
descriptors:
  - key: a
    value: x
    descriptors:
      - key: b
        value: y
        rate_limit: { unit: second, requests_per_unit: 1 }
  - key: a
    descriptors:
      - key: b
        rate_limit: { unit: second, requests_per_unit: 2 }
  - key: a
    value: pre*
    descriptors:
      - key: b
        rate_limit: { unit: second, requests_per_unit: 3 }
  - key: c
    value: "*"
    rate_limit: { unit: second, requests_per_unit: 4 }
  - key: sep
    rate_limit: { unit: second, requests_per_unit: 5 }
`);
  const limit = (...pairs: string[]) =>
    matchDescriptor(config, "m", entries(...pairs))?.set.limits[0]?.requestsPerUnit;

  it("goes level by level, most specific first, with no backtracking", () => {
    expect(limit("a=x", "b=y")).toBe(1);
    // a=x matched exactly; its level has no rule for b=z, and the key-only `a` is not tried.
    expect(limit("a=x", "b=z")).toBeUndefined();
    expect(limit("a=other", "b=z")).toBe(2);
    expect(limit("a=prefix", "b=z")).toBe(3);
    expect(limit("a=x")).toBeUndefined();
    expect(limit("a=x", "b=y", "c=1")).toBeUndefined();
    expect(limit("c=anything")).toBe(4);
  });

  it("never lets two descriptors share a counter through separators in values", () => {
    const k1 = matchDescriptor(config, "m", entries("sep=a|b=c"))!.counterKey;
    const k2 = matchDescriptor(config, "m", entries("sep=a"))!.counterKey;
    expect(k1).not.toBe(k2);
    expect(k1).not.toContain("|b=c");
  });
});

describe("wildcard values", () => {
  const matches = (pattern: string, value: string) => matchesWildcard(wildcardPattern(pattern)!, value);

  it("match a prefix, a prefix and a suffix, and middle parts in order; each * may be empty", () => {
    expect(matches("files/*", "files/")).toBe(true);
    expect(matches("*", "")).toBe(true);
    expect(matches("*.example.com", "a.example.com")).toBe(true);
    expect(matches("svc*ep*rpc", "svceprpc")).toBe(true);
    expect(matches("svc*ep*rpc", "svcepXrpcYeprpc")).toBe(true);
    expect(matches("a**b", "ab")).toBe(true);
    expect(matches("svc*ep*rpc", "svcrpcep")).toBe(false);
  });

  it("never let the prefix and the suffix overlap, nor a middle part reach into the suffix", () => {
    expect(matches("ab*ba", "aba")).toBe(false);
    expect(matches("ab*ba", "abba")).toBe(true);
    expect(matches("a*bc*c", "abc")).toBe(false);
    expect(matches("a*bc*c", "abcc")).toBe(true);
  });

  it("are only values with a *", () => {
    expect(wildcardPattern("plain")).toBeUndefined();
  });
});
