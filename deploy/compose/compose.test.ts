import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { buildSnapshots, parseConfigText, staticBootstrap, translate } from "@portico/control-plane";
import { findEnvoy } from "@portico/envoy";
import { encodeMessage } from "@portico/contract";
import { COMPOSE_ENVOYS, renderComposeBootstrap } from "./render-bootstraps.js";

const run = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);

describe("deploy files", () => {
  it("the committed Envoy bootstraps are what the template renders, and Envoy accepts them", async () => {
    const envoy = await findEnvoy();
    for (const e of COMPOSE_ENVOYS) {
      const file = path.join(here, e.file);
      expect(
        fs.readFileSync(file, "utf8"),
        `${e.file} is stale: run npx tsx deploy/compose/render-bootstraps.ts`,
      ).toBe(renderComposeBootstrap(e.nodeId, e.group));
      await run(envoy.path, ["--mode", "validate", "-c", file, "--disable-hot-restart", "-l", "error"]);
    }
  });

  for (const seed of ["compose/portico.yaml", "demo/portico.yaml"]) {
    it(`deploy/${seed} is valid, and Envoy accepts every gateway it defines`, async () => {
      const envoy = await findEnvoy();
      const config = parseConfigText(fs.readFileSync(path.join(here, "..", seed), "utf8"));
      expect(() => buildSnapshots(config)).not.toThrow();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-seed-"));
      for (const [group, resources] of translate(config)) {
        const file = path.join(dir, `${group}.pb`);
        fs.writeFileSync(
          file,
          encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap(group, resources)),
        );
        await run(envoy.path, ["--mode", "validate", "-c", file, "--disable-hot-restart", "-l", "error"]);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }
});
