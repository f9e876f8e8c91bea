/**
 * One fetch of a published JWK Set, under the rules ext-authz fetches by: `https://` only (plain
 * `http://` to loopback when the provider allows it), no redirect, a deadline and a size cap, and
 * only keys that can verify a signature (no symmetric key, no private member, long enough).
 */
import http from "node:http";
import https from "node:https";
import tls from "node:tls";
import { insecureUrlProblem, readPublishedJwks, type Jwk } from "@portico/contract";

export interface JwksFetchOptions {
  timeoutMs: number;
  /** Lets a plain `http://` URI to a loopback address through (the provider's `allowInsecureLoopback`). */
  allowInsecureLoopback: boolean;
  /** CA certificates (PEM) trusted besides the system's, for an issuer behind a private CA. */
  ca?: string;
  /** Larger answers are refused: a JWKS is a few kilobytes. */
  maxBytes?: number;
}

export type JwksFetchResult =
  | {
      ok: true;
      keys: Jwk[];
      /** Keys left out, each with the reason. */
      skipped: string[];
      /** The answer's `Cache-Control` freshness in seconds, when it gave one (0 for no-cache/no-store). */
      maxAgeSeconds: number | undefined;
    }
  | { ok: false; error: string };

export type JwksFetcher = (uri: string, opts: JwksFetchOptions) => Promise<JwksFetchResult>;

const MAX_BYTES = 1_048_576;

/** Seconds of freshness a Cache-Control header grants, or undefined when it says nothing about it. */
export function cacheControlMaxAge(header: string | undefined): number | undefined {
  if (!header) return undefined;
  const directives = header
    .toLowerCase()
    .split(",")
    .map((d) => d.trim());
  if (directives.some((d) => d === "no-cache" || d === "no-store")) return 0;
  for (const d of directives) {
    const m = /^(?:s-)?max-age\s*=\s*"?(\d+)"?$/.exec(d);
    if (m) return Number(m[1]);
  }
  return undefined;
}

function get(
  uri: string,
  opts: JwksFetchOptions,
): Promise<{ status: number; body: string; cacheControl: string | undefined }> {
  const url = new URL(uri);
  const client = url.protocol === "https:" ? https : http;
  const maxBytes = opts.maxBytes ?? MAX_BYTES;
  return new Promise((resolve, reject) => {
    const req = client.get(
      url,
      {
        headers: { accept: "application/jwk-set+json, application/json" },
        timeout: opts.timeoutMs,
        // The system's roots stay trusted; a private CA is added to them, not put in their place.
        ...(opts.ca && url.protocol === "https:" ? { ca: [...tls.rootCertificates, opts.ca] } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            req.destroy(new Error(`the answer is larger than ${maxBytes} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString("utf8"),
            cacheControl: res.headers["cache-control"],
          }),
        );
        res.on("error", reject);
      },
    );
    const deadline = setTimeout(
      () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    req.on("close", () => clearTimeout(deadline));
    req.on("timeout", () => req.destroy(new Error(`no answer within ${opts.timeoutMs} ms`)));
    req.on("error", reject);
  });
}

/** Fetches and checks a JWK Set; never throws. */
export const fetchJwks: JwksFetcher = async (uri, opts) => {
  const problem = insecureUrlProblem(uri, opts.allowInsecureLoopback);
  if (problem) return { ok: false, error: `jwksUri ${problem}` };
  let answer: Awaited<ReturnType<typeof get>>;
  try {
    answer = await get(uri, opts);
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
  // A redirect could move key discovery to a host nobody configured.
  if (answer.status >= 300 && answer.status < 400)
    return {
      ok: false,
      error: `the JWKS endpoint answered a redirect (HTTP ${answer.status}), which is not followed`,
    };
  if (answer.status !== 200) return { ok: false, error: `the JWKS endpoint answered HTTP ${answer.status}` };
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer.body);
  } catch {
    return { ok: false, error: "the answer is not JSON" };
  }
  const read = readPublishedJwks(parsed);
  if (read.error) return { ok: false, error: read.error };
  return {
    ok: true,
    keys: read.keys,
    skipped: read.skipped,
    maxAgeSeconds: cacheControlMaxAge(answer.cacheControl),
  };
};
