import { DEGRADED_HEADER, PARTIAL_HEADER, STALE_HEADER } from "@portico/contract";
import { failsTheCall, type PartResult } from "./fanout.js";

export interface Composed {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

const JSON_TYPE = { "content-type": "application/json" };

function failedAnswer(
  failed: Extract<PartResult, { state: "failed" }>,
  all: PartResult[],
  requestId?: string,
): Composed {
  const [status, code] =
    failed.reason === "timeout"
      ? [504, "part_timeout"]
      : failed.reason === "missing_header"
        ? [400, "missing_input"]
        : [502, "part_failed"];
  return {
    status,
    headers: { ...JSON_TYPE, "cache-control": "no-store" },
    body: {
      code,
      message: `required part '${failed.key}' failed: ${failed.detail}`,
      part: failed.key,
      // The parts stopped once the answer was decided did not fail: they are left out.
      failed: all.filter((r) => r.state === "failed" && r.reason !== "cancelled").map((r) => r.key),
      ...(requestId ? { request_id: requestId } : {}),
    },
  };
}

/**
 * The parts' results → one answer. Every required part answered (fresh or stale): 200 with
 * `{ <key>: <answer> }`, and the optional parts that failed left out and named (marked degraded). A required part
 * that failed with nothing to stand in for it fails the call: 504 when its deadline passed, 400
 * when the request lacks a header its path needs, 502 otherwise. Pure, so the answer's shape is
 * tested without a network.
 */
export function merge(results: PartResult[], requestId?: string): Composed {
  const required = results.find(failsTheCall);
  if (required?.state === "failed") return failedAnswer(required, results, requestId);
  const body: Record<string, unknown> = {};
  const missing: string[] = [];
  const stale: string[] = [];
  for (const r of results) {
    if (r.state === "failed") missing.push(r.key);
    else body[r.key] = r.value;
    if (r.state === "stale") stale.push(r.key);
  }
  const headers: Record<string, string> = { ...JSON_TYPE };
  if (missing.length) {
    body._missing = missing;
    headers[PARTIAL_HEADER] = missing.join(",");
  }
  if (stale.length) {
    body._stale = stale;
    headers[STALE_HEADER] = stale.join(",");
  }
  // A degraded answer is for this moment only: no cache should keep it.
  if (missing.length || stale.length) {
    headers["cache-control"] = "no-store";
    headers[DEGRADED_HEADER] = [
      ...(missing.length ? ["partial"] : []),
      ...(stale.length ? ["stale"] : []),
    ].join(",");
  }
  return { status: 200, headers, body };
}
