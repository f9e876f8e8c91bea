// One list of identity headers with ext-authz, which sets them.
import {
  ALL_IDENTITY_HEADERS as IDENTITY_HEADERS,
  PART_HEADER,
  PARTS_TOKEN_HEADER,
  renderPartTemplate,
} from "@portico/contract";
import type { CompiledPart, CompiledRoute } from "../config/compile.js";
import { BodyTooLargeError, type PartCaller } from "./call.js";
import { staleKey, type StaleStore } from "./stale.js";

/**
 * Passed from the client's request to every part: who is calling (the identity ext-authz vouched
 * for, which is also part of the stale key), which request this is, and the parts token Envoy set
 * on the call. The parts listener believes the identity only with the token, so identity headers
 * sent to the aggregator by anything but Envoy reach no upstream.
 */
export const FORWARDED_HEADERS = [
  ...IDENTITY_HEADERS,
  "x-request-id",
  "traceparent",
  "tracestate",
  PARTS_TOKEN_HEADER,
];

export type FailureReason =
  | "timeout"
  | "upstream_status"
  | "unreachable"
  | "invalid_json"
  | "too_large"
  | "missing_header"
  | "cancelled";

export type PartResult =
  | { key: string; required: boolean; state: "ok"; value: unknown; ms: number }
  | {
      key: string;
      required: boolean;
      state: "stale";
      value: unknown;
      ageMs: number;
      reason: FailureReason;
      ms: number;
    }
  | { key: string; required: boolean; state: "failed"; reason: FailureReason; detail: string; ms: number };

/** Sees every part's result (metrics). */
export interface PartObserver {
  part(route: string, result: PartResult): void;
}

export interface FanOutDeps {
  caller: PartCaller;
  stale: StaleStore;
  observer?: PartObserver;
  now?: () => number;
}

/** The request a composition answers, as the parts need it. */
export interface Incoming {
  params: Readonly<Record<string, string>>;
  /** A header of the client's request (lower-case name), as Envoy passed it on. */
  header(name: string): string | undefined;
  /** Aborted when the client goes away: its parts are no longer worth waiting for. */
  signal: AbortSignal;
}

/** Why a part still running was stopped: the client left, or the answer no longer needs it. */
type Cancelled = { client: AbortSignal; decided: AbortSignal };

function describe(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

async function callPart(
  route: CompiledRoute,
  part: CompiledPart,
  incoming: Incoming,
  cancelled: Cancelled,
  deps: FanOutDeps,
): Promise<PartResult> {
  const now = deps.now ?? performance.now.bind(performance);
  const started = now();
  const base = { key: part.key, required: part.required };
  const rendered = renderPartTemplate(part.template, incoming.params, incoming.header);
  if (!rendered.ok) {
    return {
      ...base,
      state: "failed",
      reason: "missing_header",
      detail: `the request has no ${rendered.missingHeader} header`,
      ms: 0,
    };
  }
  const headers: Record<string, string> = {
    accept: "application/json",
    [PART_HEADER]: `${route.name}/${part.key}`,
  };
  for (const h of FORWARDED_HEADERS) {
    const v = incoming.header(h);
    if (v !== undefined) headers[h] = v;
  }
  // Only parts with a stale fallback need the key (a hash per call): the others skip it.
  const key =
    part.staleMaxAgeMs === undefined
      ? ""
      : staleKey(
          route.name,
          part.key,
          rendered.path,
          IDENTITY_HEADERS.map((h) => incoming.header(h) ?? ""),
        );
  const deadline = AbortSignal.timeout(part.timeoutMs);
  const signal = AbortSignal.any([deadline, cancelled.client, cancelled.decided]);

  let failure: { reason: FailureReason; detail: string };
  try {
    const res = await deps.caller({ url: route.partsUrl + rendered.path, headers, signal });
    if (res.status < 200 || res.status > 299) {
      failure = { reason: "upstream_status", detail: `status ${res.status}` };
    } else {
      try {
        const value: unknown = JSON.parse(res.body);
        if (part.staleMaxAgeMs !== undefined) deps.stale.put(key, value, part.staleMaxAgeMs);
        return { ...base, state: "ok", value, ms: now() - started };
      } catch {
        failure = { reason: "invalid_json", detail: "the answer is not JSON" };
      }
    }
  } catch (err) {
    if (deadline.aborted) failure = { reason: "timeout", detail: `no answer in ${part.timeoutMs} ms` };
    else if (cancelled.client.aborted) failure = { reason: "cancelled", detail: "the client went away" };
    else if (cancelled.decided.aborted)
      failure = { reason: "cancelled", detail: "the answer was decided without it" };
    else if (err instanceof BodyTooLargeError) failure = { reason: "too_large", detail: err.message };
    else failure = { reason: "unreachable", detail: describe(err) };
  }
  if (part.staleMaxAgeMs !== undefined && failure.reason !== "cancelled") {
    const last = await deps.stale.get(key, part.staleMaxAgeMs);
    if (last) {
      return {
        ...base,
        state: "stale",
        value: last.value,
        ageMs: Math.max(0, Date.now() - last.storedAtMs),
        reason: failure.reason,
        ms: now() - started,
      };
    }
  }
  return { ...base, state: "failed", ...failure, ms: now() - started };
}

/**
 * Whether a result alone fails the call: a required part failed with nothing to stand in for it
 * (not one stopped because the answer was already decided, or the client left).
 */
export function failsTheCall(r: PartResult): boolean {
  return r.required && r.state === "failed" && r.reason !== "cancelled";
}

/**
 * Calls every part at once, each with its own deadline: the whole takes as long as the slowest
 * part (at most its deadline), never the sum. It ends as soon as the answer is decided: when a
 * required part fails with nothing to stand in for it, the parts still running are cancelled and
 * their results are `cancelled`. A part never throws; its failure is a result, so one part cannot
 * take the others down. Results are in the route's order of parts.
 */
export function fanOut(route: CompiledRoute, incoming: Incoming, deps: FanOutDeps): Promise<PartResult[]> {
  const decided = new AbortController();
  const cancelled = { client: incoming.signal, decided: decided.signal };
  const results: (PartResult | undefined)[] = route.parts.map(() => undefined);
  return new Promise((resolve) => {
    let pending = route.parts.length;
    const settle = () => {
      resolve(
        results.map(
          (r, i): PartResult =>
            r ?? {
              key: route.parts[i]!.key,
              required: route.parts[i]!.required,
              state: "failed",
              reason: "cancelled",
              detail: "the answer was decided without it",
              ms: 0,
            },
        ),
      );
    };
    route.parts.forEach((part, i) => {
      void callPart(route, part, incoming, cancelled, deps).then((result) => {
        deps.observer?.part(route.name, result);
        if (decided.signal.aborted) return;
        results[i] = result;
        pending--;
        if (failsTheCall(result)) {
          decided.abort();
          settle();
        } else if (pending === 0) settle();
      });
    });
  });
}
