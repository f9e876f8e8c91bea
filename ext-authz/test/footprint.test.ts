import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { RUN_FROM_SOURCE } from "@portico/testing";
import { afterAll, describe, expect, it } from "vitest";

// What ext-authz keeps in its heap decides how long each full collection stops it: every Check
// promotes grpc-js's call objects, and a full collection's pause grows with the live heap. Two
// large parts have no work to do in a service that does not trace: the OpenTelemetry SDK (loaded
// only when tracing is on) and Envoy's API loaded by reflection (only tests and benches use it).
// The service runs as deployed, from main.ts, with a probe that records what it loads.

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.resolve(HERE, "../src/main.ts");
const PROBE = path.join(HERE, "fixtures/load-probe.mjs");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-authz-footprint-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const OTEL_SDK = /\/@opentelemetry\/(sdk-trace|exporter-trace-otlp-grpc|resources)\//;
const ENVOY_API = /envoy-api\.binpb$/;

interface Loaded {
  modules: string[];
  files: string[];
}

let runs = 0;

/** Runs `args` under Node with the probe, until it logs `ready` (then SIGTERM) or exits. */
async function loadedBy(args: string[], env: Record<string, string>, ready?: string): Promise<Loaded> {
  const out = path.join(dir, `loaded-${++runs}.json`);
  const child = spawn(process.execPath, ["--import", PROBE, ...RUN_FROM_SOURCE, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, VITEST: "", LOG_LEVEL: "info", ...env, PORTICO_LOAD_PROBE_OUT: out },
  });
  // A signal's name when one ended it: the service stops on SIGTERM by itself, exiting 0.
  const exited = new Promise<number | string | null>((resolve) =>
    child.once("exit", (code, signal) => resolve(code ?? signal)),
  );
  if (ready) {
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (l) => {
        if (l.includes(`"msg":"${ready}"`)) resolve();
      });
      void exited.then(() => reject(new Error(`exited before logging "${ready}"`)));
    });
    child.kill("SIGTERM");
  } else child.stdout!.resume();
  expect(await exited).toBe(0);
  return JSON.parse(fs.readFileSync(out, "utf8")) as Loaded;
}

function startArgs(): string[] {
  const policy = path.join(dir, "policy.json");
  fs.writeFileSync(policy, JSON.stringify({ consumers: [{ name: "acme", plan: "gold" }] }));
  return [MAIN, "--policy", policy, "--listen", "127.0.0.1:0", "--metrics", "off"];
}

describe("what ext-authz loads", () => {
  it("serves without the OpenTelemetry SDK or Envoy's API loaded by reflection, when it does not trace", async () => {
    const loaded = await loadedBy(startArgs(), {}, "ext-authz serving");
    // The probe saw the service's own modules: the figures below are not empty by accident.
    expect(loaded.modules.some((m) => m.endsWith("/ext-authz/src/grpc/server.ts"))).toBe(true);
    expect(loaded.modules.filter((m) => OTEL_SDK.test(m))).toEqual([]);
    expect(loaded.files.filter((f) => ENVOY_API.test(f))).toEqual([]);
  });

  it("loads the SDK when tracing is on", async () => {
    const loaded = await loadedBy(
      startArgs(),
      // Nothing listens there; no span is sampled without Envoy's parent, so nothing is sent.
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
      "ext-authz serving",
    );
    expect(loaded.modules.some((m) => OTEL_SDK.test(m))).toBe(true);
  });

  it("sees Envoy's API read where it is loaded", async () => {
    const loaded = await loadedBy(
      ["--input-type=module", "-e", `import { authTypes } from "@portico/ext-authz"; authTypes();`],
      {},
    );
    expect(loaded.files.some((f) => ENVOY_API.test(f))).toBe(true);
  });
});
