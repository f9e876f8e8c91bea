import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { parseConfigText } from "@portico/control-plane";
import { findEnvoy } from "@portico/envoy";
import { edgeBootstrapConfigMap } from "./render-bootstrap.js";
import { validateManifests } from "./validate-manifests.js";

const run = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);
const manifests = fs
  .readdirSync(here)
  .filter((f) => f.endsWith(".yaml"))
  .map((f) => path.join(here, f));
const docs = (file: string) => parseAllDocuments(fs.readFileSync(file, "utf8")).map((d) => d.toJS());

describe("Kubernetes manifests", () => {
  it("pass strict schema validation, and a broken one does not", { timeout: 300_000 }, async () => {
    const out = await validateManifests(manifests);
    expect(out).toMatch(/passed for resource horizontalpodautoscaler\/portico-edge/);
    const broken = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portico-k8s-")), "broken.yaml");
    fs.writeFileSync(
      broken,
      fs.readFileSync(path.join(here, "edge-envoy.yaml"), "utf8").replace("replicas: 2", "replicas: two"),
    );
    await expect(validateManifests([broken])).rejects.toThrow(/replicas/);
  });

  it("run several control-plane replicas on the shared Redis store", () => {
    const cp = docs(path.join(here, "control-plane.yaml")).find((d) => d.kind === "Deployment");
    expect(cp.spec.replicas).toBeGreaterThan(1);
    expect(cp.spec.template.spec.containers[0].args).toContain("--store=redis://portico-redis:6379");
    const seed = docs(path.join(here, "control-plane.yaml")).find((d) => d.kind === "ConfigMap");
    expect(() => parseConfigText(seed.data["portico.yaml"])).not.toThrow();
  });

  it("carry the edge bootstrap rendered from the template, which Envoy accepts", async () => {
    const file = path.join(here, "edge-envoy-bootstrap.yaml");
    expect(fs.readFileSync(file, "utf8"), "stale: run npx tsx deploy/k8s/render-bootstrap.ts").toBe(
      edgeBootstrapConfigMap(),
    );
    const bootstrap = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portico-k8s-")), "envoy.yaml");
    fs.writeFileSync(bootstrap, docs(file)[0].data["envoy.yaml"]);
    const envoy = await findEnvoy();
    await run(envoy.path, ["--mode", "validate", "-c", bootstrap, "--disable-hot-restart", "-l", "error"]);
  });
});
