import path from "node:path";
import type { Logger } from "@portico/common";
import { FileStore, RedisStore } from "../store/index.js";
import type { ConfigStore } from "../store/types.js";
import type { UsageLedger } from "./ledger.js";
import { MemoryLedger } from "./memory-ledger.js";

export { UsageCounting, type UsageCountingOptions } from "./usage-counter.js";
export type { UsageLedger, UsageIncrement } from "./ledger.js";
export { MemoryLedger } from "./memory-ledger.js";
export type { QuotaDeny } from "../model/usage-quota.js";

/** The file, in the file store's directory, that keeps usage counts and denies across restarts. */
export const USAGE_FILE = "quota-usage.json";

/**
 * Where a control plane on `store` counts calendar quotas: beside the config in Redis on the Redis
 * store (shared by the replicas), in memory kept in the store's directory on the file store.
 */
export function usageLedgerFor(store: ConfigStore, log: Logger, now?: () => number): UsageLedger {
  if (store instanceof RedisStore) return store.usageLedger();
  const file = store instanceof FileStore ? path.join(store.dir, USAGE_FILE) : undefined;
  return new MemoryLedger({ file, log, now });
}
