import fs from "node:fs";
import http from "node:http";
import { performance } from "node:perf_hooks";
import type { XdsProtocol } from "@portico/envoy";
import { startEnvoy, type EnvoyProcess } from "@portico/testing";
import type { Cleanups } from "./cleanups.js";

/** A real Envoy on the control plane's ADS; `stop` also removes its directory. */
export async function startBenchEnvoy(
  cleanups: Cleanups,
  o: { nodeId: string; group: string; xdsPort: number; protocol: XdsProtocol },
): Promise<{ e: EnvoyProcess; stop: () => Promise<void> }> {
  const e = await startEnvoy({ ...o, logLevel: "warn", componentLogLevel: "upstream:warn,config:warn" });
  const stop = async () => {
    await e.stop();
    fs.rmSync(e.dir, { recursive: true, force: true });
  };
  cleanups.push(stop);
  return { e, stop };
}

/** GET over the given agent (keep-alive or not); `at` is when the response head arrived. */
export function timedGet(
  url: string,
  agent: http.Agent,
  timeoutMs = 2000,
): Promise<{ status: number; at: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      const at = performance.now();
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode ?? 0, at }));
      res.on("error", reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on("error", reject);
  });
}
