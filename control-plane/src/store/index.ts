import path from "node:path";
import { fileURLToPath } from "node:url";
import { redisCredentialsFromEnv, withRedisCredentials, type Logger } from "@portico/common";
import { FileStore } from "./file-store.js";
import { RedisStore, type RedisStoreOptions } from "./redis-store.js";
import type { ConfigStore } from "./types.js";

export { FileStore, StoreLockedError, type FileStoreOptions } from "./file-store.js";
export { RedisStore, type RedisStoreOptions } from "./redis-store.js";
export * from "./types.js";
export { SecretSealer, SecretsKeyError, type SecretsKeyOptions } from "./sealer.js";

export const DEFAULT_STORE_DIR = ".portico/store";

/**
 * Opens the store a spec names:
 *   ""                          file store in `.portico/store` under the working directory
 *   `file:<dir>`, `file:///abs` file store in that directory
 *   `redis://…`, `rediss://…`   Redis store; `?prefix=…&keep=…&waitReplicas=…` set its options
 *   `redis+cluster://[:password@]host:port,host:port[?…]`  Redis store on a Redis Cluster, from its
 *                               seed nodes (`rediss+cluster://` for TLS); the same three options
 */
export async function openStore(spec: string, log: Logger): Promise<ConfigStore> {
  const store = createStore(spec, log);
  await store.open();
  return store;
}

export function createStore(spec: string, log: Logger): ConfigStore {
  const s = spec.trim();
  if (s === "") return new FileStore({ dir: path.resolve(DEFAULT_STORE_DIR), log });
  if (s.startsWith("file://")) return new FileStore({ dir: fileURLToPath(s), log });
  if (s.startsWith("file:"))
    return new FileStore({ dir: path.resolve(s.slice(5) || DEFAULT_STORE_DIR), log });
  if (/^rediss?\+cluster:\/\//i.test(s)) return new RedisStore(clusterOptions(s, log));
  if (/^rediss?:\/\//i.test(s)) return new RedisStore(redisOptions(s, log));
  throw new Error(
    `unknown store '${spec}': use file:<dir>, redis://host:port (rediss:// for TLS) or ` +
      `redis+cluster://host:port,host:port (rediss+cluster:// for TLS)`,
  );
}

/**
 * `redis+cluster://[[user]:password@]host:port,host:port[?prefix=&keep=&waitReplicas=]`
 * (`rediss+cluster://` for TLS): the seed nodes of a Redis Cluster. The port defaults to 6379;
 * IPv6 hosts go in brackets.
 */
function clusterOptions(spec: string, log: Logger): RedisStoreOptions {
  const shown = spec.replace(/\/\/[^@/]*@/, "//***@");
  const m = /^(rediss?)\+cluster:\/\/(?:([^:@/]*):([^@/]*)@)?([^/?]+)\/?(?:\?(.*))?$/i.exec(spec);
  if (!m) throw new Error(`'${shown}' is not a valid Redis Cluster URL`);
  const [, scheme, username, password, hosts, query] = m;
  const nodes = hosts!.split(",").map((h) => {
    const hp = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(h);
    const port = Number(hp?.[3] ?? 6379);
    if (!hp || port < 1 || port > 65535) throw new Error(`'${h}' in '${shown}' is not host:port`);
    return { host: hp[1] ?? hp[2]!, port };
  });
  const opts: RedisStoreOptions = {
    log,
    cluster: { nodes },
    redis: withRedisCredentials(
      {
        ...(username ? { username: decodeURIComponent(username) } : {}),
        ...(password ? { password: decodeURIComponent(password) } : {}),
        ...(scheme!.toLowerCase() === "rediss" ? { tls: {} } : {}),
      },
      redisCredentialsFromEnv(),
    ),
  };
  for (const [name, value] of new URLSearchParams(query ?? "")) {
    if (name === "prefix") opts.prefix = value;
    else if (name === "keep") opts.keep = integerParam("keep", value);
    else if (name === "waitReplicas") opts.waitReplicas = integerParam("waitReplicas", value);
    // Nothing else reaches ioredis here, so an option it would have read must not pass unnoticed.
    else throw new Error(`'${shown}': unknown option '${name}' (prefix, keep and waitReplicas are)`);
  }
  return opts;
}

function redisOptions(spec: string, log: Logger): RedisStoreOptions {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new Error(`'${spec.replace(/\/\/[^@/]*@/, "//***@")}' is not a valid Redis URL`);
  }
  // ioredis takes the URL's own credentials over these.
  const credentials = redisCredentialsFromEnv();
  const opts: RedisStoreOptions = { log, ...(credentials.password ? { redis: credentials } : {}) };
  const take = (name: string): string | undefined => {
    const v = url.searchParams.get(name) ?? undefined;
    url.searchParams.delete(name);
    return v;
  };
  const prefix = take("prefix");
  if (prefix !== undefined) opts.prefix = prefix;
  const keep = take("keep");
  if (keep !== undefined) opts.keep = integerParam("keep", keep);
  const waitReplicas = take("waitReplicas");
  if (waitReplicas !== undefined) opts.waitReplicas = integerParam("waitReplicas", waitReplicas);
  // What remains (ioredis reads its own options from the query) goes to ioredis untouched.
  opts.url = url.toString();
  return opts;
}

function integerParam(name: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n))
    throw new Error(`store URL: ${name} must be a whole number, got '${value}'`);
  return n;
}
