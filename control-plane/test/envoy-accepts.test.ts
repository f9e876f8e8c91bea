import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { findEnvoy } from "@portico/envoy";
import { encodeMessage } from "@portico/contract";
import { parseConfigText } from "../src/model/validate.js";
import { staticBootstrap } from "../src/translate/static-bootstrap.js";
import { translate } from "../src/translate/translate.js";

const run = promisify(execFile);
const golden = path.join(path.dirname(new URL(import.meta.url).pathname), "golden");

/** The translator's output must be what Envoy itself accepts, not just what the schema allows. */
describe("Envoy accepts the translated config", () => {
  for (const input of fs.readdirSync(golden).filter((f) => f.endsWith(".yaml"))) {
    it(`${input}: envoy --mode validate passes for every gateway`, async () => {
      const envoy = await findEnvoy();
      const config = parseConfigText(fs.readFileSync(path.join(golden, input), "utf8"));
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-accepts-"));
      for (const [group, resources] of translate(config)) {
        const file = path.join(dir, `${group}.pb`);
        fs.writeFileSync(
          file,
          encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap(group, resources)),
        );
        const result = await run(envoy.path, [
          "--mode",
          "validate",
          "-c",
          file,
          "--disable-hot-restart",
          "-l",
          "error",
        ]).catch((err: { stdout: string; stderr: string }) => ({
          stdout: err.stdout,
          stderr: err.stderr,
          failed: true,
        }));
        expect(result, `${group}: ${result.stdout}\n${result.stderr}`).not.toHaveProperty("failed");
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }

  it("and refuses what Envoy refuses, with Envoy's reason", async () => {
    const envoy = await findEnvoy();
    const config = parseConfigText(fs.readFileSync(path.join(golden, "two-groups.yaml"), "utf8"));
    const [group, resources] = [...translate(config)][0]!;
    const broken = resources.map((r) =>
      r.typeUrl.endsWith("RouteConfiguration")
        ? {
            ...r,
            message: {
              name: r.name,
              virtual_hosts: [
                { name: "a", domains: ["*"] },
                { name: "b", domains: ["*"] },
              ],
            },
          }
        : r,
    );
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portico-refuses-")), "b.pb");
    fs.writeFileSync(
      file,
      encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap(group, broken)),
    );
    const err = await run(envoy.path, ["--mode", "validate", "-c", file, "--disable-hot-restart"]).then(
      () => undefined,
      (e: { stdout: string; stderr: string }) => `${e.stdout}${e.stderr}`,
    );
    expect(err).toMatch(/domain/i);
  });
});
