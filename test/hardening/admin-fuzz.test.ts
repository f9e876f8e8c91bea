import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ADMIN_TOKEN,
  freePort,
  startAdmin,
  startEnvoy,
  type AdminHandle,
  type EnvoyProcess,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";
import { schemathesis } from "./schemathesis.js";

const SEED = 20240611;
const MAX_EXAMPLES = 50;

interface Summary {
  operations: number;
  cases: number;
  statuses: Record<string, number>;
  serverErrors: string[];
  failures: string[];
  errors: string[];
}

function decode(body: any): string {
  if (body == null) return "";
  const text =
    typeof body?.$base64 === "string"
      ? Buffer.from(body.$base64, "base64").toString("utf8")
      : JSON.stringify(body);
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

/** Counts from schemathesis' NDJSON event stream; each finding as request and response, to reproduce by hand. */
function summarise(ndjson: string): Summary {
  const s: Summary = { operations: 0, cases: 0, statuses: {}, serverErrors: [], failures: [], errors: [] };
  const labels = new Set<string>();
  for (const line of ndjson.split("\n")) {
    if (!line.trim()) continue;
    const event = JSON.parse(line);
    const finished = event.ScenarioFinished;
    if (finished) {
      const rec = finished.recorder ?? {};
      if (rec.label) labels.add(rec.label);
      for (const [id, i] of Object.entries<any>(rec.interactions ?? {})) {
        s.cases++;
        const req = `${i.request.method} ${i.request.uri}\n  body: ${decode(i.request.body)}`;
        if (!i.response) {
          s.errors.push(`${req}\n  no response`);
          continue;
        }
        const code = i.response.status_code as number;
        s.statuses[`${code}`] = (s.statuses[`${code}`] ?? 0) + 1;
        const shown = `${req}\n  -> ${code} ${decode(i.response.content)}`;
        if (code >= 500) s.serverErrors.push(shown);
        for (const c of rec.checks?.[id] ?? [])
          if (c.status === "failure" && c.name !== "not_a_server_error")
            s.failures.push(`${c.name}: ${shown}`);
      }
    }
    // Network errors and timeouts arrive as their own events, outside any interaction.
    for (const kind of ["NonFatalError", "FatalError"])
      if (event[kind]) s.errors.push(`${kind}: ${JSON.stringify(event[kind]).slice(0, 2000)}`);
  }
  s.operations = labels.size;
  return s;
}

/** Sums of Envoy's `*.update_success` and `*.update_rejected` counters over LDS, RDS, CDS and EDS. */
async function xdsUpdates(envoy: EnvoyProcess): Promise<{ success: number; rejected: number }> {
  let success = 0;
  let rejected = 0;
  for (const [name, value] of await envoy.stats()) {
    if (name.endsWith(".update_success")) success += value;
    if (name.endsWith(".update_rejected")) rejected += value;
  }
  return { success, rejected };
}

/**
 * Fuzzes the admin API from its own OpenAPI document. A real Envoy is connected to the gateway
 * group the fuzzer writes to, so any input the API accepts but Envoy refuses shows up as a NACK.
 */
describe("admin API under schemathesis", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let st: string;

  beforeAll(async () => {
    // First: on a fresh machine this is a pip install, and without PyPI the suite must fail here.
    st = await schemathesis();
    api = await startAdmin();
    const port = await freePort();
    // A small live config: its names (edge, users) are what the fuzzer draws for path and body
    // fields once it has read them back, so its writes and rollbacks land on what Envoy serves.
    const seed: [string, unknown][] = [
      ["/api/v1/gateways/edge", { name: "edge", listeners: [{ name: "http", port, address: "127.0.0.1" }] }],
      ["/api/v1/upstreams/users", { name: "users", endpoints: [{ host: "127.0.0.1", port: 9 }] }],
      [
        "/api/v1/routes/users",
        { name: "users", gateway: "edge", match: { pathPrefix: "/users" }, upstream: "users" },
      ],
    ];
    for (const [p, body] of seed) expect((await api.call("PUT", p, { body })).status).toBe(201);
    envoy = track(await startEnvoy({ nodeId: "edge-1", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
  }, 360_000);

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
  });

  it("survives at least 2,000 generated requests with no 5xx, and Envoy refuses nothing it accepted", async () => {
    const reportDir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-fuzz-"));
    const ndjson = path.join(reportDir, "events.ndjson");
    const args = [
      "run",
      `${api.url}/openapi.json`,
      "--header",
      `Authorization: Bearer ${ADMIN_TOKEN}`,
      "--checks",
      "not_a_server_error",
      // The coverage phase alone is ~17,000 deterministic cases and minutes of generation on two
      // cores; the seeded fuzzing phase gives the 2,000+ cases within the time budget.
      "--phases",
      "fuzzing",
      "--seed",
      String(SEED),
      // 66 operations; a few have no parameters and yield a single case.
      "--max-examples",
      String(MAX_EXAMPLES),
      "--generation-database",
      "none",
      "--request-timeout",
      "15",
      "--workers",
      "2",
      "--no-color",
      "--report",
      "ndjson",
      "--report-ndjson-path",
      ndjson,
    ];
    const before = await xdsUpdates(envoy);
    const started = Date.now();
    const out = await new Promise<{ code: number | string; text: string }>((resolve) => {
      execFile(
        st,
        args,
        // cwd in the temp dir: anything the tool writes next to itself stays out of the tree.
        {
          cwd: reportDir,
          maxBuffer: 64 * 1024 * 1024,
          timeout: 200_000,
          env: { ...process.env, NO_COLOR: "1" },
        },
        (err, stdout, stderr) => {
          const e = err as (Error & { code?: number | string; signal?: string }) | null;
          resolve({ code: e ? (e.code ?? e.signal ?? 1) : 0, text: `${stdout}${stderr}` });
        },
      );
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const r = summarise(fs.readFileSync(ndjson, "utf8"));
    console.log(
      `schemathesis: ${r.cases} cases over ${r.operations} operations in ${seconds} s; ` +
        `${r.serverErrors.length} 5xx, ${r.failures.length} failed checks, ${r.errors.length} errors; ` +
        `statuses ${JSON.stringify(r.statuses)}; events in ${ndjson}`,
    );
    const report = [...r.serverErrors, ...r.failures, ...r.errors].slice(0, 20).join("\n\n");
    expect(r.serverErrors, `5xx responses:\n${report}`).toEqual([]);
    expect(r.failures, `failed checks:\n${report}`).toEqual([]);
    expect(r.errors, `requests without an answer:\n${report}`).toEqual([]);
    expect(out.code, `schemathesis exited with ${out.code}:\n${out.text.slice(-8000)}`).toBe(0);
    expect(r.cases).toBeGreaterThanOrEqual(2000);

    // Envoy's own counters: how many config pushes it took during the run (so the NACK check
    // below is not vacuous) and whether it refused any.
    const after = await xdsUpdates(envoy);
    console.log(
      `envoy xDS updates during fuzzing: ${after.success - before.success} accepted, ${after.rejected - before.rejected} rejected`,
    );
    expect(after.success - before.success).toBeGreaterThan(0);
    expect(after.rejected, "Envoy rejected config the admin API accepted").toBe(0);

    const status = await api.call("GET", "/api/v1/status");
    expect(status.status).toBe(200);
    const nodes: any[] = status.json.nodes;
    // The fleet must still hold the Envoy: a fleet list without it would make "no NACK" vacuous.
    expect(nodes.map((n) => n.id)).toContain("edge-1");
    const nacks = nodes.flatMap((n) =>
      Object.entries(n.types ?? {})
        .filter(([, t]: [string, any]) => t?.lastNack)
        .map(([type, t]: [string, any]) => `${n.id} ${type}: ${JSON.stringify(t.lastNack)}`),
    );
    console.log(`fleet after fuzzing: ${nodes.length} node(s), ${nacks.length} NACK(s)`);
    expect(nacks, "Envoy refused config the admin API accepted").toEqual([]);
  }, 240_000);
});
