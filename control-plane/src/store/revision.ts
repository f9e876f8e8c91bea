import { configRevision } from "../config/publish.js";
import type { Config } from "../model/schema.js";
import type { SecretSealer } from "./sealer.js";
import type { CommitMeta, Revision, RevisionSummary } from "./types.js";

export function newRevision(number: number, config: Config, meta: CommitMeta = {}): Revision {
  const hash = meta.hash ?? configRevision(config);
  const rev: Revision = { number, hash, config, createdAt: new Date().toISOString() };
  if (meta.message !== undefined) rev.message = meta.message;
  if (meta.author !== undefined) rev.author = meta.author;
  return rev;
}

export function summaryOf(rev: RevisionSummary): RevisionSummary {
  const s: RevisionSummary = { number: rev.number, hash: rev.hash, createdAt: rev.createdAt };
  if (rev.message !== undefined) s.message = rev.message;
  if (rev.author !== undefined) s.author = rev.author;
  return s;
}

/** A revision as it is kept in memory and handed to watchers: secrets in the clear. */
export function encodeRevision(rev: Revision): string {
  return JSON.stringify({
    number: rev.number,
    hash: rev.hash,
    config: rev.config,
    createdAt: rev.createdAt,
    message: rev.message,
    author: rev.author,
  });
}

/** A revision as it is written to disk or Redis: its secrets sealed. */
export function sealRevision(rev: Revision, sealer: SecretSealer): string {
  return encodeRevision({ ...rev, config: sealer.seal(rev.config) });
}

/**
 * Parses a stored revision, opens its secrets and checks it is whole: the hash is recomputed from
 * the config, so a truncated or altered record is refused rather than served to the fleet. A key
 * that does not open its secrets is a SecretsKeyError, not a damaged record.
 */
export function decodeRevision(text: string, sealer: SecretSealer, expectedNumber?: number): Revision {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`not valid JSON (${(err as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new Error("not a JSON object");
  const r = raw as Record<string, unknown>;
  if (typeof r.number !== "number" || !Number.isSafeInteger(r.number) || r.number < 1) {
    throw new Error("no valid revision number");
  }
  if (expectedNumber !== undefined && r.number !== expectedNumber) {
    throw new Error(`holds revision ${r.number}, expected ${expectedNumber}`);
  }
  if (typeof r.hash !== "string") throw new Error("no hash");
  if (typeof r.createdAt !== "string") throw new Error("no createdAt");
  if (typeof r.config !== "object" || r.config === null || Array.isArray(r.config))
    throw new Error("no config");
  if (r.message !== undefined && typeof r.message !== "string") throw new Error("message is not a string");
  if (r.author !== undefined && typeof r.author !== "string") throw new Error("author is not a string");
  const config = sealer.unseal(r.config as Config, `revision ${r.number}`);
  const actual = configRevision(config);
  if (actual !== r.hash) throw new Error(`content hash ${actual} does not match the recorded ${r.hash}`);
  const rev: Revision = { number: r.number, hash: r.hash, config, createdAt: r.createdAt };
  if (r.message !== undefined) rev.message = r.message as string;
  if (r.author !== undefined) rev.author = r.author as string;
  return rev;
}

export function checkExpected(expected: number): void {
  if (!Number.isSafeInteger(expected) || expected < 0) {
    throw new TypeError(`expected revision must be a non-negative integer, got ${String(expected)}`);
  }
}

export function checkKeep(keep: number): number {
  if (!Number.isSafeInteger(keep) || keep < 1)
    throw new TypeError(`keep must be a positive integer, got ${String(keep)}`);
  return keep;
}

/** `list()`'s limit: the history size when omitted, nothing for a limit below 1. */
export function listLimit(limit: number | undefined, keep: number): number {
  if (limit === undefined) return keep;
  if (Number.isNaN(limit) || limit < 1) return 0;
  return Math.min(Math.floor(limit), Number.MAX_SAFE_INTEGER);
}
