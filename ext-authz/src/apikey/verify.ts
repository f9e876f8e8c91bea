import { createHash } from "node:crypto";
import { DEFAULT_PLAN, type Identity } from "../identity.js";
import type { ApiKey, Consumer } from "@portico/contract";

/** Keys longer than this are refused before hashing; generated keys are far shorter. */
export const MAX_API_KEY_BYTES = 512;

export function sha256Hex(plaintext: string): string {
  return createHash("sha256").update(plaintext, "utf8").digest("hex");
}

export interface ApiKeyRecord {
  readonly name: string;
  readonly consumer: Consumer;
  readonly expiresAtMs: number | undefined;
  readonly revoked: boolean;
  /** The identity handed out on success, built once when the policy is compiled. */
  readonly identity: Identity;
}

/** API keys by the SHA-256 of their plaintext: one hash and one map lookup per request. */
export type ApiKeyIndex = ReadonlyMap<string, ApiKeyRecord>;

export type ApiKeyFailure = "unknown" | "revoked" | "expired" | "consumer_disabled" | "too_long";

export type ApiKeyResult =
  { ok: true; identity: Identity } | { ok: false; reason: ApiKeyFailure; keyName?: string };

/**
 * Builds the lookup table. The caller has checked that every key's consumer exists and that
 * hashes are unique.
 */
export function buildApiKeyIndex(
  consumers: ReadonlyMap<string, Consumer>,
  keys: readonly ApiKey[],
): ApiKeyIndex {
  const index = new Map<string, ApiKeyRecord>();
  for (const key of keys) {
    const consumer = consumers.get(key.consumer);
    if (!consumer) throw new Error(`API key ${key.name} names unknown consumer ${key.consumer}`);
    const scopes = [...new Set([...(consumer.scopes ?? []), ...(key.scopes ?? [])])];
    index.set(key.sha256, {
      name: key.name,
      consumer,
      expiresAtMs: key.expiresAt === undefined ? undefined : Date.parse(key.expiresAt),
      revoked: key.revoked,
      identity: {
        kind: "apiKey",
        provider: "apiKey",
        consumer: consumer.name,
        plan: consumer.plan ?? DEFAULT_PLAN,
        keyId: key.name,
        scopes,
        claims: {},
      },
    });
  }
  return index;
}

/**
 * Checks a presented key. A map lookup by hash does not leak the stored hashes through timing in
 * any useful way: finding a key still needs its preimage.
 */
export function verifyApiKey(index: ApiKeyIndex, presented: string, nowMs: number): ApiKeyResult {
  if (Buffer.byteLength(presented, "utf8") > MAX_API_KEY_BYTES) return { ok: false, reason: "too_long" };
  const record = index.get(sha256Hex(presented));
  if (!record) return { ok: false, reason: "unknown" };
  if (record.revoked) return { ok: false, reason: "revoked", keyName: record.name };
  if (record.consumer.disabled) return { ok: false, reason: "consumer_disabled", keyName: record.name };
  if (record.expiresAtMs !== undefined && record.expiresAtMs <= nowMs) {
    return { ok: false, reason: "expired", keyName: record.name };
  }
  return { ok: true, identity: record.identity };
}
