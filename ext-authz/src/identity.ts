import { isReservedConsumer, type Consumer, type CredentialKind } from "@portico/contract";

export type { CredentialKind };

/** An authenticated caller, whatever the credential; what the decision and the headers are built from. */
export interface Identity {
  readonly kind: CredentialKind;
  /** The provider that vouched for the caller (a JWT or OAuth provider name, or `apiKey`). */
  readonly provider: string;
  readonly consumer: string;
  readonly plan: string;
  /** The API key's name, for API-key callers only. */
  readonly keyId?: string;
  readonly scopes: readonly string[];
  /** Token claims (JWT) or the introspection answer (OAuth); empty for API keys. */
  readonly claims: Readonly<Record<string, unknown>>;
}

/** The plan of an authenticated caller whose consumer record and token name none. */
export const DEFAULT_PLAN = "default";
/** Consumer, plan and provider of a caller without credentials, so rate-limit keys always have a value. */
export const ANONYMOUS = "anonymous";

/** Why a token's consumer claim cannot stand for a caller. */
export type ConsumerRefusal = "reserved_consumer" | "unlinked_consumer" | "consumer_disabled";

/**
 * What a token's (or introspection answer's) consumer names: a consumer record only when its
 * provider links that record (`consumers`); otherwise a caller of its own, which may not share a
 * name with any record, so it never inherits an API-key consumer's plan, allow-lists or limits.
 * Reserved names (`anonymous`) are refused outright.
 */
export function linkConsumer(
  name: string,
  linked: readonly string[] | undefined,
  records: ReadonlyMap<string, Consumer>,
): { ok: true; record: Consumer | undefined } | { ok: false; reason: ConsumerRefusal } {
  if (isReservedConsumer(name)) return { ok: false, reason: "reserved_consumer" };
  const record = records.get(name);
  if (record === undefined) return { ok: true, record: undefined };
  if (!linked?.includes(name)) return { ok: false, reason: "unlinked_consumer" };
  if (record.disabled) return { ok: false, reason: "consumer_disabled" };
  return { ok: true, record };
}
