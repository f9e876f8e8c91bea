// An Envoy on a static bootstrap, configured by hand as its own users would: a baseline that owes
// nothing to Portico's translation. Same binary and flags as the harness's Envoys (one worker).
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { findEnvoy } from "@portico/envoy";
import { httpGet } from "@portico/testing";

export interface StaticEnvoy {
  /** Counters whose name ends with `suffix`, summed over every stat prefix. */
  counter(suffix: string): Promise<number>;
  configDump(): Promise<string>;
  stop(): Promise<void>;
}

/** Starts Envoy on `bootstrap` (its admin is added on an ephemeral loopback port) and waits for /ready. */
export async function startStaticEnvoy(dir: string, name: string, bootstrap: object): Promise<StaticEnvoy> {
  const envoy = await findEnvoy({ install: true });
  const file = path.join(dir, `${name}.json`);
  const addressFile = path.join(dir, `${name}.admin`);
  fs.writeFileSync(
    file,
    JSON.stringify({
      admin: { address: { socket_address: { address: "127.0.0.1", port_value: 0 } } },
      ...bootstrap,
    }),
  );
  const child = spawn(
    envoy.path,
    [
      "-c",
      file,
      "--disable-hot-restart",
      "--concurrency",
      "1",
      "-l",
      "warn",
      "--admin-address-path",
      addressFile,
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const admin = async (p: string) => {
    const res = await httpGet(`http://${fs.readFileSync(addressFile, "utf8").trim()}${p}`);
    if (res.status !== 200) throw new Error(`Envoy ${name} admin ${p}: ${res.status}`);
    return res.body;
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`Envoy ${name} exited with ${child.exitCode}`);
    if (fs.existsSync(addressFile) && (await admin("/ready").catch(() => "")).trim() === "LIVE") break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`Envoy ${name} not ready within 20 s`);
    }
    await sleep(50);
  }
  return {
    async counter(suffix) {
      let total = 0;
      for (const line of (await admin(`/stats?filter=${encodeURIComponent(suffix)}$`)).split("\n")) {
        const m = /^(\S+): (\d+)$/.exec(line.trim());
        if (m && m[1]!.endsWith(suffix)) total += Number(m[2]);
      }
      return total;
    },
    configDump: () => admin("/config_dump"),
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}
