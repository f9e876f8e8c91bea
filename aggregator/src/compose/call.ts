/** How a part is called: one HTTP request, cut short by its signal. */
export interface PartRequest {
  url: string;
  headers: Record<string, string>;
  signal: AbortSignal;
}

export interface PartResponse {
  status: number;
  body: string;
}

export type PartCaller = (req: PartRequest) => Promise<PartResponse>;

export class BodyTooLargeError extends Error {
  constructor(limit: number) {
    super(`the answer is larger than ${limit} bytes`);
  }
}

/**
 * Calls through `fetch` (pooled keep-alive connections to the local Envoy), reading at most
 * `maxBodyBytes`: one part must not be able to exhaust the aggregator's memory.
 */
export function fetchCaller(maxBodyBytes = 4 * 1024 * 1024): PartCaller {
  return async ({ url, headers, signal }) => {
    const res = await fetch(url, { method: "GET", headers, signal, redirect: "manual" });
    const declared = Number(res.headers.get("content-length") ?? "0");
    if (declared > maxBodyBytes) {
      await res.body?.cancel();
      throw new BodyTooLargeError(maxBodyBytes);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (res.body) {
      for await (const chunk of res.body) {
        size += chunk.byteLength;
        if (size > maxBodyBytes) throw new BodyTooLargeError(maxBodyBytes);
        chunks.push(chunk);
      }
    }
    return { status: res.status, body: Buffer.concat(chunks).toString("utf8") };
  };
}
