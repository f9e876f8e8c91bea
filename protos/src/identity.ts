/**
 * Headers Portico sets on requests it lets through. On every allowed request each one is either
 * set (overwriting whatever the client sent) or removed, so an upstream can trust them.
 */
export const IDENTITY_HEADERS = {
  /** The consumer: an API key's consumer, a JWT's subject claim, an introspected token's `sub`. */
  consumer: "x-portico-consumer",
  /** The API key's name (never the key); absent for other credentials. */
  keyId: "x-portico-key-id",
  /** The consumer's plan, `default` when none is known. */
  plan: "x-portico-plan",
  /** Granted scopes, space-separated; absent when there are none. */
  scopes: "x-portico-scopes",
  /** The provider that vouched for the caller: a provider name, or `apiKey`. */
  provider: "x-portico-provider",
} as const;

export const ALL_IDENTITY_HEADERS: readonly string[] = Object.values(IDENTITY_HEADERS);

/** Longest identity value passed on; longer ones are cut (a subject is never this long in practice). */
export const MAX_IDENTITY_VALUE_BYTES = 256;

/**
 * A value safe for an HTTP header and a rate-limit descriptor: printable ASCII passes unchanged,
 * anything else (and `%`) is percent-encoded, so a claim cannot inject a line break or a NUL.
 */
export function safeValue(value: string, maxBytes = MAX_IDENTITY_VALUE_BYTES): string {
  let out = "";
  for (const ch of value) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e && ch !== "%") out += ch;
    // Buffer.from turns a lone surrogate into U+FFFD instead of throwing as encodeURIComponent would.
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
    if (out.length >= maxBytes) return out.slice(0, maxBytes).replace(/%[0-9A-F]?$/, "");
  }
  return out;
}
