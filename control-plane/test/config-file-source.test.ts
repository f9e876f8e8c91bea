// A watched config file is the source of truth: its state is in the status (API and CLI), a bad
// edit is shown with every field and reason, and admin API writes are refused while it is watched.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ADMIN_TOKEN, startAdmin, waitFor, type AdminHandle } from "@portico/testing";
import { EXIT, runCli } from "../src/cli/main.js";

const gateway = { name: "edge", listeners: [{ name: "http", port: 18090, address: "127.0.0.1" }] };
const upstream = { name: "app", endpoints: [{ host: "127.0.0.1", port: 8080 }] };
const route = (prefix: string) => ({
  name: "app",
  gateway: "edge",
  match: { pathPrefix: prefix },
  upstream: "app",
});
const good = (prefix = "/a") =>
  stringify({ gateways: [gateway], upstreams: [upstream], routes: [route(prefix)] });

let api: AdminHandle;
let file: string;

/** Writes the file as an editor saving it would: a whole new file renamed into place. */
function edit(text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

async function status(): Promise<any> {
  return (await api.call("GET", "/api/v1/status")).json;
}

async function cli(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    { out: (s) => out.push(s), err: (s) => err.push(s) },
    { PORTICO_SERVER: api.url, PORTICO_TOKEN: ADMIN_TOKEN },
  );
  return { code, out: out.join("\n"), err: err.join("\n") };
}

beforeAll(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-file-source-"));
  file = path.join(dir, "portico.yaml");
  fs.writeFileSync(file, good());
  api = await startAdmin({ configFile: file, watchConfig: true, debounceMs: 20 });
});
afterAll(async () => {
  await api?.stop();
});

describe("a watched config file", () => {
  it("is in the status: watched, with the revision it applied at start", async () => {
    const body = await status();
    expect(body.config.file).toMatchObject({
      path: file,
      watching: true,
      debounceMs: 20,
      refused: false,
      lastApplied: { revision: 1, hash: body.config.hash, changed: true },
    });
    expect(body.config.file.lastRefused).toBeUndefined();
    const shown = await cli(["status"]);
    expect(shown.out).toMatch(
      /config file .*portico\.yaml: watched, the source of truth \(admin API writes are refused/,
    );
    expect(shown.out).toMatch(/last applied: revision 1 \([0-9a-f]{10}\) at /);
  });

  it("shows a refused edit with its time and every field's reason, and keeps serving the last good revision", async () => {
    edit(
      stringify({
        gateways: [gateway],
        upstreams: [upstream],
        routes: [{ ...route("/a"), gateway: "nowhere", upstream: "missing" }],
      }),
    );
    const refused = await waitFor(
      async () => ((await status()).config.file.refused ? await status() : undefined),
      {
        what: "the bad edit to be refused",
        timeoutMs: 5_000,
        intervalMs: 20,
      },
    );
    expect(refused.config.revision).toBe(1);
    const last = refused.config.file.lastRefused;
    expect(last.code).toBe("invalid_config");
    expect(Date.parse(last.at)).toBeGreaterThan(Date.now() - 10_000);
    expect(last.details.map((d: { field: string }) => d.field)).toEqual(
      expect.arrayContaining(["routes[0].gateway", "routes[0].upstream"]),
    );
    // The name the status has always used for it.
    expect(refused.config.lastRejectedFile).toEqual(last);

    const shown = await cli(["status"]);
    expect(shown.out).toMatch(/REFUSED edit at \S+ \(\d+ s ago\): still serving revision 1/);
    expect(shown.out).toMatch(/^ {4}invalid_config: the configuration is not valid$/m);
    expect(shown.out).toMatch(/^ {4}routes\[0\]\.gateway: /m);
    expect(shown.out).toMatch(/^ {4}routes\[0\]\.upstream: no upstream named 'missing'/m);

    edit(good("/b"));
    const fixed = await waitFor(
      async () => ((await status()).config.revision === 2 ? await status() : undefined),
      {
        what: "the fixed edit to be applied",
        timeoutMs: 5_000,
        intervalMs: 20,
      },
    );
    expect(fixed.config.file).toMatchObject({ refused: false, lastApplied: { revision: 2 } });
    expect(fixed.config.file.lastRefused).toEqual(last);
    expect(fixed.config.lastRejectedFile).toBeUndefined();
    expect((await cli(["status"])).out).toMatch(/last refused edit at .* \(a later edit was applied\)/);
  });

  it("applies admin API writes but says in the answer that the file's next edit replaces them", async () => {
    const put = await api.call("PUT", "/api/v1/routes/other", {
      body: { name: "other", gateway: "edge", match: { path: "/other" }, upstream: "app" },
    });
    expect(put.status).toBe(201);
    const warning = put.json.warnings.find((w: { field: string }) => w.field === "(config file)");
    expect(warning.reason).toContain(`the config file ${file} is the source of truth`);
    expect(warning.reason).toMatch(/its next edit replaces this change/);
    expect(put.headers.get("warning")).toMatch(/^299 portico ".*source of truth/);
    expect((await api.call("GET", "/api/v1/routes/other")).status).toBe(200);

    // The file's next edit is the config: the API's route is gone, as the warning said.
    edit(good("/c"));
    await waitFor(
      async () => ((await api.call("GET", "/api/v1/routes/other")).status === 404 ? true : undefined),
      {
        what: "the file's edit to replace the API's change",
        timeoutMs: 5_000,
        intervalMs: 20,
      },
    );

    const other = path.join(path.dirname(file), "other.yaml");
    fs.writeFileSync(other, good("/d"));
    const diff = await cli(["diff", "-f", other]);
    expect(diff.code).toBe(EXIT.differences);
    expect(diff.out).toBe('~ routes/app: match.pathPrefix "/c" → "/d"');
    const apply = await cli(["apply", "-f", other]);
    expect(apply.code).toBe(0);
    expect(apply.err).toMatch(/warning: \(config file\): the config file .* is the source of truth/);
  });
});

describe("a config file read at start only (no --watch)", () => {
  it("leaves admin API writes open and says the file is not watched", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-file-once-"));
    const once = path.join(dir, "portico.yaml");
    fs.writeFileSync(once, good());
    const plain = await startAdmin({ configFile: once });
    try {
      const body = (await plain.call("GET", "/api/v1/status")).json;
      expect(body.config.file).toMatchObject({ watching: false, lastApplied: { revision: 1 } });
      const put = await plain.call("PUT", "/api/v1/routes/app", { body: route("/z") });
      expect(put.status).toBe(200);
    } finally {
      await plain.stop();
    }
  });
});
