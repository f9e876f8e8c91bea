import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { findEnvoy } from "../src/find-envoy.js";

const execFileAsync = promisify(execFile);
const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
const cli = new URL("../src/cli.ts", import.meta.url).pathname;

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return execFileAsync(tsx, [cli, ...args], { timeout: 300_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: e.code ?? -1,
      stdout: e.stdout ?? "",
      stderr: e.stderr ?? "",
    }),
  );
}

describe("envoy cli", () => {
  it("prints version, path and source", async () => {
    const found = await findEnvoy();
    const res = await runCli([]);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(`envoy ${found.version} at ${found.path} (${found.source})\n`);
  }, 300_000);

  it("prints only the path with --path-only", async () => {
    const found = await findEnvoy();
    const res = await runCli(["--path-only"]);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe(`${found.path}\n`);
  }, 300_000);

  it("rejects unknown arguments", async () => {
    const res = await runCli(["--frobnicate"]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/unknown argument --frobnicate/);
    expect(res.stderr).toMatch(/usage:/);
  });

  it("fails with the reason when ENVOY_BIN is wrong", async () => {
    const res = await execFileAsync(tsx, [cli], {
      env: { ...process.env, ENVOY_BIN: "/nonexistent/envoy" },
    }).catch((e: { code: number; stderr: string }) => e);
    expect("code" in res && res.code).toBe(1);
    expect(res.stderr).toMatch(/ENVOY_BIN=\/nonexistent\/envoy does not exist/);
  });
});
