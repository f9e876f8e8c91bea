import { IDENTITY_HEADERS, safeValue } from "@portico/contract";
import type { Identity } from "../identity.js";

export type Header = readonly [name: string, value: string];

/**
 * What an authenticated caller's requests carry upstream: the identity headers to set and to
 * remove, and the rate-limit keys. It depends on the identity alone, so it is built once per
 * identity (an API key's is built with the compiled policy; a cached token's with its cache entry)
 * and every request of that caller shares it, down to its encoded bytes in the gRPC answer.
 */
export interface Grant {
  readonly headersToSet: readonly Header[];
  /** Identity headers this caller has no value for: removed, so a client cannot supply them. */
  readonly headersToRemove: readonly string[];
  /** Header-safe values for the rate limiter's keys. */
  readonly consumer: string;
  readonly plan: string;
  readonly provider: string;
}

const grants = new WeakMap<Identity, { maxScopesHeaderBytes: number; grant: Grant }>();

/** The identity's grant, built on first use and kept as long as the identity is. */
export function grantFor(identity: Identity, maxScopesHeaderBytes: number): Grant {
  const held = grants.get(identity);
  if (held && held.maxScopesHeaderBytes === maxScopesHeaderBytes) return held.grant;
  const grant = buildGrant(identity, maxScopesHeaderBytes);
  grants.set(identity, { maxScopesHeaderBytes, grant });
  return grant;
}

function buildGrant(identity: Identity, maxScopesHeaderBytes: number): Grant {
  const consumer = safeValue(identity.consumer);
  const plan = safeValue(identity.plan);
  const provider = safeValue(identity.provider);
  const set: Header[] = [
    [IDENTITY_HEADERS.consumer, consumer],
    [IDENTITY_HEADERS.plan, plan],
    [IDENTITY_HEADERS.provider, provider],
  ];
  const remove: string[] = [];
  if (identity.keyId !== undefined) set.push([IDENTITY_HEADERS.keyId, safeValue(identity.keyId)]);
  else remove.push(IDENTITY_HEADERS.keyId);
  const scopes = scopesHeader(identity.scopes, maxScopesHeaderBytes);
  if (scopes) set.push([IDENTITY_HEADERS.scopes, scopes]);
  else remove.push(IDENTITY_HEADERS.scopes);
  return Object.freeze({
    headersToSet: Object.freeze(set),
    headersToRemove: Object.freeze(remove),
    consumer,
    plan,
    provider,
  });
}

function scopesHeader(scopes: readonly string[], maxBytes: number): string {
  let out = "";
  for (const raw of scopes) {
    const s = safeValue(raw, maxBytes);
    const next = out ? `${out} ${s}` : s;
    // Cut at a scope boundary: an upstream sees fewer scopes, never a mangled one.
    if (next.length > maxBytes) break;
    out = next;
  }
  return out;
}
