import type { UsageLedgerKeys } from "../../quota/redis-ledger.js";
import type { FleetBoardKeys } from "./fleet-board.js";

/**
 * The store's keys. All carry the hash tag {prefix}, so that they share one Redis Cluster slot and
 * one Lua script can touch them together.
 */
export interface StoreKeys {
  /** The newest revision number. */
  head: string;
  /** Sorted set of the kept history: member = summary JSON, score = number. */
  revs: string;
  /** `revPrefix` + n holds revision n, JSON. */
  revPrefix: string;
  /** Pub/sub channel carrying each new head number. */
  channel: string;
  /** The replicas' shared fleet state (see fleet-board.ts). */
  fleet: FleetBoardKeys;
  /** Calendar quotas counted from access logs, and who ran out (see quota/redis-ledger.ts). */
  quota: UsageLedgerKeys;
}

export function storeKeys(prefix: string): StoreKeys {
  const tag = `{${prefix}}`;
  return {
    head: `${tag}:head`,
    revs: `${tag}:revs`,
    revPrefix: `${tag}:rev:`,
    channel: `${tag}:changes`,
    fleet: { index: `${tag}:fleet`, entryPrefix: `${tag}:fleet:`, channel: `${tag}:fleet-changes` },
    quota: {
      counterPrefix: `${tag}:quota:n:`,
      denies: `${tag}:quota:denies`,
      channel: `${tag}:quota-changes`,
    },
  };
}

export function revisionKey(keys: StoreKeys, n: number): string {
  return `${keys.revPrefix}${n}`;
}

const SLOTS = 16_384;

/**
 * The Redis Cluster slot of a key, by the cluster specification: CRC16 (XMODEM) of its hash tag
 * (the text inside the first non-empty {…}, or the whole key), modulo 16384.
 */
export function clusterSlot(key: string): number {
  const open = key.indexOf("{");
  const close = open >= 0 ? key.indexOf("}", open + 1) : -1;
  const hashed = close > open + 1 ? key.slice(open + 1, close) : key;
  let crc = 0;
  for (const byte of Buffer.from(hashed, "utf8")) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % SLOTS;
}
