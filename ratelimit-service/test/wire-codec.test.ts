/** The hand-written ShouldRateLimit codec against protobufjs's reflective one. */
import { WireError } from "@portico/common";
import { describe, expect, it } from "vitest";
import { messageTypes, type RateLimitResponse } from "../src/service/codec.js";
import { decodeRateLimitRequest, encodeRateLimitResponse } from "../src/service/wire-codec.js";

const { request, response } = messageTypes();
const DECODE = { longs: Number, enums: String, defaults: true, arrays: true } as const;
const encodeRequest = (o: object) => Buffer.from(request.encode(request.fromObject(o)).finish());
const viaProtobufjs = (b: Buffer) => request.toObject(request.decode(b), DECODE);
const decodeResponse = (b: Uint8Array) => response.toObject(response.decode(b), DECODE);

/** protobufjs gives absent messages as null; the hand-written decoder leaves them out. */
function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withoutNulls);
  if (v && typeof v === "object")
    return Object.fromEntries(
      Object.entries(v)
        .filter(([, x]) => x !== null)
        .map(([k, x]) => [k, withoutNulls(x)]),
    );
  return v;
}

describe("decodeRateLimitRequest", () => {
  const cases: [string, object][] = [
    ["one descriptor", { domain: "edge", descriptors: [{ entries: [{ key: "api_key", value: "k1" }] }] }],
    [
      "nested entries, a request-carried limit, per-descriptor and request hits",
      {
        domain: "d",
        hits_addend: 3,
        descriptors: [
          {
            entries: [
              { key: "plan", value: "gold" },
              { key: "consumer", value: "ünïcødé ✓" },
            ],
            limit: { requests_per_unit: 42, unit: "MINUTE" },
            hits_addend: { value: 0 },
          },
          { entries: [{ key: "remote_address", value: "" }], hits_addend: { value: 2 ** 40 } },
          { entries: [], limit: { requests_per_unit: 4_000_000_000, unit: "YEAR" } },
        ],
      },
    ],
    ["nothing at all", {}],
    [
      "a value longer than 127 bytes",
      { domain: "d".repeat(300), descriptors: [{ entries: [{ key: "k", value: "v".repeat(1_000) }] }] },
    ],
  ];
  for (const [name, message] of cases) {
    it(`reads what protobufjs reads: ${name}`, () => {
      const bytes = encodeRequest(message);
      expect(withoutNulls(decodeRateLimitRequest(bytes))).toEqual(withoutNulls(viaProtobufjs(bytes)));
    });
  }

  it("skips unknown fields and throws a WireError on truncated bytes", () => {
    const known = encodeRequest({ domain: "d", descriptors: [{ entries: [{ key: "a", value: "b" }] }] });
    const unknown = Buffer.from([0xf8, 0x07, 0x05, 0xfa, 0x07, 0x01, 0x00]);
    expect(decodeRateLimitRequest(Buffer.concat([unknown, known]))).toEqual(decodeRateLimitRequest(known));
    expect(() => decodeRateLimitRequest(known.subarray(0, known.length - 2))).toThrow(WireError);
  });
});

describe("encodeRateLimitResponse", () => {
  const shared = Object.freeze({ requests_per_unit: 10, unit: "SECOND" as const, name: "per-second" });
  const responses: [string, RateLimitResponse][] = [
    [
      "all OK, no limit",
      { overall_code: "OK", statuses: [Object.freeze({ code: "OK" as const, limit_remaining: 0 })] },
    ],
    [
      "over limit, with headers and a shared limit",
      {
        overall_code: "OVER_LIMIT",
        statuses: [
          {
            code: "OVER_LIMIT",
            current_limit: shared,
            limit_remaining: 0,
            duration_until_reset: { seconds: 1 },
          },
          {
            code: "OK",
            current_limit: { requests_per_unit: 4_000_000_000, unit: "WEEK" },
            limit_remaining: 4_294_967_295,
            duration_until_reset: { seconds: 604_800 },
          },
          { code: "OK", current_limit: shared, limit_remaining: 9, duration_until_reset: { seconds: 0 } },
        ],
        response_headers_to_add: [
          { key: "retry-after", value: "1" },
          { key: "RateLimit-Limit", value: "x".repeat(200) },
        ],
      },
    ],
  ];
  for (const [name, res] of responses) {
    it(`answers what protobufjs encodes: ${name}`, () => {
      const reference = response.encode(response.fromObject(res)).finish();
      expect(decodeResponse(encodeRateLimitResponse(res))).toEqual(decodeResponse(reference));
      // Again, from the parts encoded the first time.
      expect(decodeResponse(encodeRateLimitResponse(res))).toEqual(decodeResponse(reference));
    });
  }
});
