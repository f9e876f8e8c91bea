// An Envoy on a static bootstrap, configured by hand as its own users would: a baseline that owes
// nothing to Portico's translation. Same binary and flags as the harness's Envoys (one worker).
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { findEnvoy } from "@portico/envoy";
import { httpGet } from "@portico/testing";
import { ISSUER, jwk } from "./bench-jwt.js";

export interface StaticEnvoy {
  /** Envoy's process id, for its CPU time. */
  readonly pid: number;
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
    pid: child.pid!,
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

const ROUTER = {
  name: "envoy.filters.http.router",
  typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
};

/** A loopback HTTP listener whose `paths` go to the cluster `app`, through `filters` then the router. */
export function staticListener(
  name: string,
  port: number,
  paths: readonly string[],
  filters: object[],
): object {
  return {
    name,
    address: { socket_address: { address: "127.0.0.1", port_value: port } },
    filter_chains: [
      {
        filters: [
          {
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type":
                "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              stat_prefix: name,
              route_config: {
                name: "local",
                virtual_hosts: [
                  {
                    name: "all",
                    domains: ["*"],
                    routes: paths.map((p) => ({ match: { path: p }, route: { cluster: "app" } })),
                  },
                ],
              },
              http_filters: [...filters, ROUTER],
            },
          },
        ],
      },
    ],
  };
}

/** The cluster `app`: one upstream on loopback. */
export function appCluster(port: number): object {
  return {
    name: "app",
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: {
      cluster_name: "app",
      endpoints: [
        {
          lb_endpoints: [
            { endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: port } } } },
          ],
        },
      ],
    },
  };
}

/** A Lua filter that does nothing: the least any check written in Lua costs. */
export const EMPTY_LUA = {
  name: "envoy.filters.http.lua",
  typed_config: {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
    default_source_code: { inline_string: "function envoy_on_request(h) end" },
  },
};

/**
 * jwt_authn as its users write it: the bench's provider with its key inline, a verified-token
 * cache of `cacheSize`, the token's subject in `x-portico-consumer`, required on `path`.
 */
export function staticJwtAuthn(path: string, cacheSize: number): object {
  return {
    name: "envoy.filters.http.jwt_authn",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
      providers: {
        idp: {
          issuer: ISSUER,
          audiences: ["bench"],
          local_jwks: { inline_string: JSON.stringify({ keys: [jwk] }) },
          forward: false,
          claim_to_headers: [{ header_name: "x-portico-consumer", claim_name: "sub" }],
          jwt_cache_config: { jwt_cache_size: cacheSize },
        },
      },
      rules: [{ match: { path }, requires: { provider_name: "idp" } }],
    },
  };
}
