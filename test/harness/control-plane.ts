import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { silentLogger } from "@portico/common";
import {
  startControlPlane,
  type ControlPlane,
  configRevision,
  validateConfig,
  type ConfigInput,
} from "@portico/control-plane";
import { testTokens } from "./admin.js";
import { waitFor } from "./wait.js";

export interface TestControlPlane {
  cp: ControlPlane;
  file: string;
  xdsPort: number;
  /** Writes the config file as an editor would (atomic rename) and waits until it is published. */
  update(config: ConfigInput): Promise<void>;
  /** Writes raw text (possibly invalid) to the config file. */
  writeRaw(text: string): void;
  stop(): Promise<void>;
  /** Starts a fresh control plane on the same ports and file, as a restart would. */
  restart(): Promise<void>;
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** A real control plane (file store, xDS, ops HTTP) on free ports, fed from a temp YAML file. */
export async function startTestControlPlane(
  config: ConfigInput,
  opts: { xdsPort?: number; skipSemanticChecks?: boolean } = {},
): Promise<TestControlPlane> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-cp-"));
  const file = path.join(dir, "portico.yaml");
  writeAtomic(file, stringify(config));
  const start = (xdsPort: number) =>
    startControlPlane({
      store: `file:${path.join(dir, "store")}`,
      configFile: file,
      watchConfig: true,
      tokens: testTokens(),
      xdsPort,
      adminPort: 0,
      log: silentLogger(),
      debounceMs: 20,
      skipSemanticChecks: opts.skipSemanticChecks,
    });
  let cp = await start(opts.xdsPort ?? 0);
  const handle: TestControlPlane = {
    get cp() {
      return cp;
    },
    file,
    xdsPort: cp.xdsPort,
    async update(next) {
      const revision = configRevision(validateConfig(next, { skipSemanticChecks: opts.skipSemanticChecks }));
      writeAtomic(file, stringify(next));
      await waitFor(() => cp.publisher.current?.revision === revision || undefined, {
        what: `control plane to publish revision ${revision}`,
        timeoutMs: 5_000,
        intervalMs: 10,
      });
    },
    writeRaw(text) {
      writeAtomic(file, text);
    },
    async stop() {
      await cp.stop();
    },
    async restart() {
      cp = await start(handle.xdsPort);
    },
  };
  return handle;
}
