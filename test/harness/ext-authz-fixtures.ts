import { compilePolicy, type CompiledPolicy, type RequestAttributes } from "@portico/ext-authz";
import { formatPolicyError, type PolicyInput } from "@portico/contract";

/** Compiles a policy that the test expects to be valid. */
export function policyOf(doc: PolicyInput): CompiledPolicy {
  const r = compilePolicy(doc);
  if (!r.ok) throw new Error(formatPolicyError(r.error));
  return r.value;
}

export function request(
  headers: Record<string, string> = {},
  opts: { path?: string; ext?: Record<string, string>; ip?: string } = {},
): RequestAttributes {
  return {
    headers: new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])),
    path: opts.path ?? "/orders",
    method: "GET",
    sourceIp: opts.ip ?? "198.51.100.7",
    contextExtensions: opts.ext ?? {},
  };
}

/** A clock the test moves by hand. */
export function manualClock(startMs: number): {
  now: () => number;
  advance: (ms: number) => void;
  set: (ms: number) => void;
} {
  let t = startMs;
  return { now: () => t, advance: (ms) => void (t += ms), set: (ms) => void (t = ms) };
}
