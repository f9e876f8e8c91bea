import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { describeChange, fieldChanges } from "../src/cli/field-diff.js";
import { EXIT, runCli } from "../src/cli/main.js";
import { ADMIN_TOKEN, READ_TOKEN, startAdmin, type AdminHandle } from "@portico/testing";

let api: AdminHandle;
let dir: string;

beforeAll(async () => {
  api = await startAdmin();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-cli-"));
});
afterAll(async () => {
  await api?.stop();
});

async function cli(args: string[], token: string | undefined = ADMIN_TOKEN) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (s) => out.push(s), err: (s) => err.push(s) },
    {
      PORTICO_SERVER: api.url,
      ...(token ? { PORTICO_TOKEN: token } : {}),
    },
  );
  return { code, out: out.join("\n"), err: err.join("\n") };
}

const config = {
  gateways: [{ name: "edge", listeners: [{ name: "http", port: 18081 }] }],
  upstreams: [{ name: "users", endpoints: [{ host: "127.0.0.1", port: 8080 }] }],
  routes: [{ name: "users", gateway: "edge", match: { pathPrefix: "/users" }, upstream: "users" }],
};

describe("portico CLI", () => {
  it("diff shows what apply would do, apply does it, diff then finds nothing", async () => {
    const file = path.join(dir, "gateway.yaml");
    fs.writeFileSync(file, stringify(config));
    const before = await cli(["diff", "-f", file]);
    expect(before.code).toBe(EXIT.differences);
    expect(before.out).toContain("+ routes/users");
    const applied = await cli(["apply", "-f", file]);
    expect(applied.code).toBe(EXIT.ok);
    expect(applied.out).toMatch(/create routes\/users/);
    expect(applied.out).toMatch(/revision \d+/);
    const after = await cli(["diff", "-f", file]);
    expect(after.code).toBe(EXIT.ok);
    expect(after.out).toBe("no changes");
  });

  it("apply --wait with no connected node reports that and succeeds", async () => {
    const file = path.join(dir, "more.yaml");
    fs.writeFileSync(
      file,
      stringify({
        ...config,
        routes: [...config.routes, { ...config.routes[0], name: "u2", match: { path: "/u2" } }],
      }),
    );
    const res = await cli(["apply", "-f", file, "--wait", "--timeout", "2s"]);
    expect(res.code).toBe(EXIT.ok);
    expect(res.out).toMatch(/no connected node is affected/);
  });

  it("get lists as a table and shows one resource as YAML; export round-trips", async () => {
    const list = await cli(["get", "upstreams"]);
    expect(list.out.split("\n")[0]).toMatch(/^NAME$/);
    expect(list.out).toMatch(/^users$/m);
    const one = await cli(["get", "upstreams", "users"]);
    expect(one.out).toMatch(/name: users/);
    const exported = path.join(dir, "export.yaml");
    expect((await cli(["export", "-o", exported])).code).toBe(EXIT.ok);
    expect((await cli(["diff", "-f", exported])).code).toBe(EXIT.ok);
  });

  it("lists routes in the order Envoy tries them, and prints a write's warnings", async () => {
    const file = path.join(dir, "order.yaml");
    const upstream = { upstream: "users", gateway: "edge" };
    fs.writeFileSync(
      file,
      stringify({
        ...config,
        routes: [
          { ...upstream, name: "hv", match: { pathPrefix: "/hv" } },
          {
            ...upstream,
            name: "hv-v2",
            match: { pathPrefix: "/hv", headers: [{ name: "x-version", exact: "v2" }] },
          },
          {
            ...upstream,
            name: "hv-beta",
            match: { pathPrefix: "/hv", headers: [{ name: "x-beta", present: true }] },
          },
          { ...upstream, name: "health", match: { path: "/health" } },
        ],
      }),
    );
    const applied = await cli(["apply", "-f", file]);
    expect(applied.code).toBe(EXIT.ok);
    expect(applied.err).toMatch(
      /warning: routes\[2\]\.match: requests that match both route 'hv-v2' and route 'hv-beta' go to 'hv-v2'/,
    );
    const list = await cli(["get", "routes"]);
    expect(list.out.split("\n")[0]).toMatch(/^ORDER\s+NAME\s+GATEWAY\s+MATCH\s+UPSTREAM$/);
    expect(
      list.out
        .split("\n")
        .slice(1)
        .map((l) => l.split(/\s+/).slice(0, 2).join(" ")),
    ).toEqual(["1 health", "2 hv-v2", "3 hv-beta", "4 hv"]);
    expect(list.out).toMatch(/2\s+hv-v2\s+edge\s+\/hv\*\s+x-version: v2\s+users/);
  });

  it("status, revisions and rollback", async () => {
    const status = await cli(["status"], READ_TOKEN);
    expect(status.code).toBe(EXIT.ok);
    expect(status.out).toMatch(/^config revision \d+/);
    const revisions = await cli(["revisions"]);
    expect(revisions.out).toMatch(/REVISION\s+CREATED/);
    const rollback = await cli(["rollback", "1"]);
    expect(rollback.code).toBe(EXIT.ok);
    expect(rollback.out).toMatch(/rolled back to revision 1/);
  });

  it("exits with clear codes: refused, read-only, usage, unreachable", async () => {
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(bad, stringify({ ...config, routes: [{ ...config.routes[0], upstream: "missing" }] }));
    const refused = await cli(["apply", "-f", bad]);
    expect(refused.code).toBe(EXIT.refused);
    expect(refused.err).toMatch(/routes\[0\]\.upstream: no upstream named 'missing'/);
    expect((await cli(["apply", "-f", bad], READ_TOKEN)).code).toBe(EXIT.refused);
    expect((await cli(["frobnicate"])).code).toBe(EXIT.usage);
    expect((await cli(["apply"])).code).toBe(EXIT.usage);
    const out: string[] = [];
    const code = await runCli(
      ["status"],
      { out: (s) => out.push(s), err: (s) => out.push(s) },
      { PORTICO_SERVER: "http://127.0.0.1:1" },
    );
    expect(code).toBe(EXIT.unreachable);
    expect(out.join()).toMatch(/cannot reach/);
  });

  it("runs as the installed `portico` command", async () => {
    // Asynchronously: the admin server answering it lives in this process.
    const run = promisify(execFile);
    const bin = path.resolve("control-plane/bin/portico.mjs");
    const res = await run(process.execPath, [bin, "get", "routes"], {
      env: { ...process.env, PORTICO_SERVER: api.url, PORTICO_TOKEN: ADMIN_TOKEN },
    });
    expect(res.stdout).toMatch(/users/);
    const noToken = await run(process.execPath, [bin, "get", "routes"], {
      env: { ...process.env, PORTICO_SERVER: api.url, PORTICO_TOKEN: "" },
    }).catch((err: { code: number; stderr: string }) => err);
    expect((noToken as { code: number }).code).toBe(EXIT.refused);
    expect((noToken as { stderr: string }).stderr).toMatch(/401 unauthenticated/);
  });
});

describe("portico diff, field by field", () => {
  it("names each changed field with its old and new value, and no field left at its default", async () => {
    const base = path.join(dir, "fields-base.yaml");
    fs.writeFileSync(base, stringify(config));
    expect((await cli(["apply", "-f", base])).code).toBe(EXIT.ok);
    const edited = path.join(dir, "fields-edited.yaml");
    fs.writeFileSync(
      edited,
      stringify({
        ...config,
        upstreams: [...config.upstreams, { name: "people", endpoints: [{ host: "127.0.0.1", port: 8081 }] }],
        routes: [{ ...config.routes[0], match: { pathPrefix: "/people" }, timeoutMs: 1500 }],
      }),
    );
    const res = await cli(["diff", "-f", edited]);
    expect(res.code).toBe(EXIT.differences);
    expect(res.out.split("\n")).toEqual([
      "+ upstreams/people",
      '~ routes/users: match.pathPrefix "/users" → "/people"',
      "~ routes/users: timeoutMs (none) → 1500",
    ]);
  });

  it("compares lists of named items by name and other lists by position", () => {
    expect(
      fieldChanges(
        { endpoints: [{ host: "a", port: 1 }], listeners: [{ name: "http", port: 80 }] },
        {
          endpoints: [{ host: "a", port: 2 }],
          listeners: [
            { name: "admin", port: 81 },
            { name: "http", port: 80 },
          ],
        },
      ).map(describeChange),
    ).toEqual(["endpoints[0].port 1 → 2", 'listeners[admin] (none) → {"name":"admin","port":81}']);
    expect(fieldChanges({ methods: ["GET"] }, { methods: ["GET", "POST"] }).map(describeChange)).toEqual([
      'methods ["GET"] → ["GET","POST"]',
    ]);
  });
});

describe("portico command names", () => {
  it("takes history and log for revisions, revert for rollback, and suggests the command a typo meant", async () => {
    const revisions = await cli(["revisions"]);
    expect(revisions.out).toMatch(/^REVISION\s+CREATED/);
    expect(revisions.out).toMatch(/^1 \([0-9a-f]{10}\)\s/m);
    expect((await cli(["history"])).out).toBe(revisions.out);
    expect((await cli(["log"])).out).toBe(revisions.out);
    const revert = await cli(["revert", "1"]);
    expect(revert.code).toBe(EXIT.ok);
    expect(revert.out).toMatch(/rolled back to revision 1/);
    const typo = await cli(["histroy"]);
    expect(typo.code).toBe(EXIT.usage);
    expect(typo.err).toMatch(/unknown command 'histroy' \(did you mean 'history'\?\)/);
  });

  it("shows a revision the same way everywhere: its number and its hash", async () => {
    const status = await cli(["status"]);
    const head = /^config revision (\d+) \(([0-9a-f]{10})\)/.exec(status.out);
    expect(head).not.toBeNull();
    const revisions = await cli(["revisions"]);
    expect(revisions.out.split("\n")[1]).toMatch(new RegExp(`^${head![1]} \\(${head![2]}\\)\\s`));
  });
});
