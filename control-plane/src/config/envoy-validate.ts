import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import type { Logger } from "@portico/common";
import { findEnvoy } from "@portico/envoy";
import { encodeMessage } from "@portico/contract";
import { ConfigError } from "../model/errors.js";
import type { Config } from "../model/schema.js";
import { staticBootstrap } from "../translate/static-bootstrap.js";
import { translate } from "../translate/translate.js";

const run = promisify(execFile);

/**
 * `envoy --mode validate` over every group's translated config, in parallel. Catches what only
 * Envoy knows (kgateway does the same before pushing); costs tens of milliseconds per group.
 */
export async function envoyValidator(log: Logger): Promise<(config: Config) => Promise<void>> {
  const envoy = await findEnvoy({ install: true, log: (m) => log.info(m) });
  return async (config: Config) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-validate-"));
    try {
      const problems = await Promise.all(
        [...translate(config)].map(async ([group, resources]) => {
          const file = path.join(dir, `${group}.pb`);
          fs.writeFileSync(
            file,
            encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap(group, resources)),
          );
          try {
            await run(
              envoy.path,
              ["--mode", "validate", "-c", file, "-l", "critical", "--disable-hot-restart"],
              {
                timeout: 20_000,
              },
            );
            return undefined;
          } catch (err) {
            const e = err as { stdout?: string; stderr?: string; message: string };
            const text = `${e.stdout ?? ""}\n${e.stderr ?? ""}`.trim() || e.message;
            return {
              field: `gateways.${group}`,
              reason: `Envoy refuses it: ${text.split("\n").slice(-3).join(" ").slice(0, 600)}`,
            };
          }
        }),
      );
      const found = problems.filter((p): p is { field: string; reason: string } => p !== undefined);
      if (found.length > 0)
        throw new ConfigError("rejected_by_envoy", "Envoy would refuse this configuration", found);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
