import type { CredentialSource } from "@portico/contract";
import { parseCookies, queryValues, type RequestAttributes } from "./request.js";

export interface FoundCredential {
  readonly value: string;
  readonly source: CredentialSource;
}

export type Extraction =
  | { kind: "none" }
  /** `where` lists every place the value was found, so all of them can be stripped. */
  | { kind: "found"; value: string; where: readonly FoundCredential[] }
  /** Different values in different places (RFC 6750 §2: more than one method is an `invalid_request`). */
  | { kind: "conflict" };

function valuesAt(req: RequestAttributes, source: CredentialSource): string[] {
  if ("header" in source) {
    const raw = req.headers.get(source.header);
    if (raw === undefined) return [];
    if (source.prefix === undefined) return [raw.trim()];
    // Authentication schemes are case-insensitive (RFC 7235 §2.1); a header with another scheme is not ours.
    const prefix = source.prefix;
    if (raw.slice(0, prefix.length).toLowerCase() === prefix.toLowerCase())
      return [raw.slice(prefix.length).trim()];
    if (raw.trim().toLowerCase() === prefix.trim().toLowerCase()) return [""];
    return [];
  }
  if ("query" in source) return queryValues(req.path, source.query);
  const out: string[] = [];
  for (const [name, value] of parseCookies(req.headers.get("cookie")))
    if (name === source.cookie) out.push(value);
  return out;
}

/** Finds the credential a provider reads, in any of its configured places. */
export function extractCredential(req: RequestAttributes, sources: readonly CredentialSource[]): Extraction {
  let value: string | undefined;
  const where: FoundCredential[] = [];
  for (const source of sources) {
    for (const v of valuesAt(req, source)) {
      if (value !== undefined && v !== value) return { kind: "conflict" };
      value = v;
      where.push({ value: v, source });
    }
  }
  return value === undefined ? { kind: "none" } : { kind: "found", value, where };
}
