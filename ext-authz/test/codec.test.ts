import { WireError } from "@portico/common";
import { policyOf, request, rsaKey, ISSUER } from "@portico/testing";
import { describe, expect, it } from "vitest";
import {
  decide,
  internalErrorDecision,
  noPolicyDecision,
  type AuthOutcome,
  type Decision,
} from "../src/decide/decide.js";
import { routePolicyFrom } from "../src/decide/route.js";
import {
  decodeCheckRequest,
  toRequestAttributes,
  type CheckRequestMessage,
} from "../src/grpc/check-request.js";
import { encodeCheckResponse } from "../src/grpc/check-response.js";
import { authTypes } from "../src/grpc/protos.js";
import type { Identity } from "../src/identity.js";
import { toCheckResponse } from "./check-response-object.js";

// The hand-written codecs against protobufjs's reflective ones: the same attributes from the same
// bytes, and answers that protobufjs decodes to the same message as the reference object form.

const { CheckRequest, CheckResponse } = authTypes();
const encodeRequest = (o: object) => Buffer.from(CheckRequest.encode(CheckRequest.fromObject(o)).finish());
const viaProtobufjs = (b: Buffer) =>
  toRequestAttributes(CheckRequest.decode(b) as unknown as CheckRequestMessage);
const decoded = (b: Buffer) =>
  CheckResponse.toObject(CheckResponse.decode(b), { enums: String, longs: Number });

function envoyRequest(http: object, extra: object = {}) {
  return {
    attributes: {
      source: { address: { socket_address: { address: "203.0.113.9", port_value: 51234 } } },
      destination: { address: { socket_address: { address: "10.0.0.1", port_value: 8080 } } },
      request: { time: { seconds: 1_700_000_000, nanos: 5 }, http },
      context_extensions: { policy: "orders", scopes: "a b" },
      metadata_context: { filter_metadata: { x: { fields: { y: { string_value: "z" } } } } },
      ...extra,
    },
  };
}

describe("decodeCheckRequest", () => {
  const cases: [string, object][] = [
    [
      "the headers map, with upper-case names and a query",
      envoyRequest({
        id: "1",
        method: "POST",
        path: "/orders?access_token=abc&x=%20y",
        host: "api.test",
        size: 12_345_678_901,
        body: "payload",
        raw_body: Buffer.from([0, 1, 2]),
        headers: { ":path": "/orders", "X-Api-Key": "pk_live", cookie: "a=1; b=2", "x-request-id": "r-1" },
      }),
    ],
    [
      "Envoy's raw header_map, a repeated header joined, raw bytes preferred, an empty key left out",
      envoyRequest({
        header_map: {
          headers: [
            { key: ":path", raw_value: Buffer.from("/raw?q=1") },
            { key: ":method", raw_value: Buffer.from("GET") },
            { key: "Accept", value: "a/b" },
            { key: "accept", raw_value: Buffer.from("c/d") },
            { key: "", value: "dropped" },
            { key: "x-utf8", raw_value: Buffer.from("grüße ✓") },
          ],
        },
      }),
    ],
    ["no path or method: the pseudo-headers", envoyRequest({ headers: { ":path": "/p", ":method": "PUT" } })],
    ["nothing at all", {}],
    ["attributes without a request", { attributes: { context_extensions: {} } }],
    [
      "a header longer than 127 bytes and many headers",
      envoyRequest({
        headers: Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`h-${i}`, "v".repeat(i * 10)])),
      }),
    ],
    [
      "a unix-socket peer",
      {
        attributes: {
          source: { address: { pipe: { path: "/tmp/s" } } },
          request: { http: { method: "GET" } },
        },
      },
    ],
  ];
  for (const [name, message] of cases) {
    it(`reads what protobufjs reads: ${name}`, () => {
      const bytes = encodeRequest(message);
      expect(decodeCheckRequest(bytes)).toEqual(viaProtobufjs(bytes));
    });
  }

  it("keeps a `__proto__` context extension as a key of its own, so it is refused as unknown", () => {
    const bytes = encodeRequest({ attributes: { context_extensions: { ["__proto__"]: "x", policy: "p" } } });
    const attrs = decodeCheckRequest(bytes);
    expect(Object.keys(attrs.contextExtensions).sort()).toEqual(["__proto__", "policy"]);
    expect(Object.getPrototypeOf(attrs.contextExtensions)).toBe(Object.prototype);
  });

  it("skips fields of every wire type it does not know", () => {
    const known = encodeRequest(envoyRequest({ method: "GET", path: "/x" }));
    // Field 99 as a varint, fixed64, fixed32 and bytes, before and after the known field.
    const unknown = Buffer.from([
      0x98, 0x06, 0x96, 0x01, 0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x9d, 0x06, 1, 2, 3, 4, 0x9a, 0x06, 2, 0xff,
      0xfe,
    ]);
    const bytes = Buffer.concat([unknown, known, unknown]);
    expect(decodeCheckRequest(bytes)).toEqual(viaProtobufjs(known));
  });

  it("throws a WireError on truncated or malformed bytes", () => {
    const bytes = encodeRequest(envoyRequest({ method: "GET", path: "/x", headers: { a: "b" } }));
    for (const cut of [1, 5, bytes.length - 1]) {
      expect(() => decodeCheckRequest(bytes.subarray(0, cut))).toThrow(WireError);
    }
    // A nested field that says it is longer than the message that holds it.
    expect(() => decodeCheckRequest(Buffer.from([0x0a, 0x03, 0x22, 0x7f, 0x00]))).toThrow(WireError);
    // A group (wire type 3).
    expect(() => decodeCheckRequest(Buffer.from([0x0b]))).toThrow(WireError);
  });
});

describe("encodeCheckResponse", () => {
  const key = rsaKey("k");
  const policy = policyOf({
    jwtProviders: [
      {
        name: "idp",
        issuer: ISSUER,
        allowAnyAudience: true,
        jwks: { keys: [key.jwk] },
        algorithms: ["RS256"],
        from: [
          { header: "authorization", prefix: "Bearer " },
          { query: "access_token" },
          { cookie: "session" },
        ],
      },
    ],
    consumers: [{ name: "acme", plan: "gold" }],
    authPolicies: [
      { name: "orders", accept: ["jwt", "apiKey"], requiredScopes: ["orders:read"] },
      { name: "public", accept: ["jwt"], allowAnonymous: true },
    ],
  });
  const settings = { realm: "portico", maxScopesHeaderBytes: 4_096 };
  const route = (name: string) => {
    const r = routePolicyFrom(policy, { policy: name });
    if (!r.ok) throw new Error(r.error);
    return r.value;
  };
  const alice: Identity = {
    kind: "jwt",
    provider: "idp",
    consumer: "alice",
    plan: "default",
    scopes: ["orders:read", ...Array.from({ length: 30 }, (_, i) => `scope-${i}`)],
    claims: {},
  };
  const acme: Identity = {
    kind: "apiKey",
    provider: "apiKey",
    consumer: "acme",
    plan: "gold",
    keyId: "acme-live",
    scopes: ["orders:read"],
    claims: {},
  };
  const req = request(
    { cookie: "session=t; theme=dark", "x-request-id": "rid-1" },
    { path: "/o?access_token=t&x=1" },
  );
  const authenticated = (
    identity: Identity,
    used: Extract<AuthOutcome, { kind: "authenticated" }>["used"],
  ): AuthOutcome => ({
    kind: "authenticated",
    identity,
    used,
  });
  const decisions: [string, Decision][] = [
    [
      "an API key, stripped from its header",
      decide(
        route("orders"),
        authenticated(acme, [{ value: "k", source: { header: "x-api-key" } }]),
        req,
        settings,
      ),
    ],
    [
      "a token in a header, a query parameter and a cookie",
      decide(
        route("orders"),
        authenticated(alice, [
          { value: "t", source: { header: "authorization", prefix: "Bearer " } },
          { value: "t", source: { query: "access_token" } },
          { value: "t", source: { cookie: "session" } },
        ]),
        req,
        settings,
      ),
    ],
    ["anonymous", decide(route("public"), { kind: "none" }, req, settings)],
    ["missing credentials", decide(route("orders"), { kind: "none" }, req, settings)],
    [
      "an invalid token",
      decide(
        route("orders"),
        { kind: "invalid", scheme: "bearer", provider: "idp", reason: "expired" },
        req,
        settings,
      ),
    ],
    ["a conflict", decide(route("orders"), { kind: "conflict", scheme: "apiKey" }, req, settings)],
    [
      "a dependency down",
      decide(
        route("orders"),
        { kind: "unavailable", provider: "idp", failOpen: false, reason: "x" },
        req,
        settings,
      ),
    ],
    ["no policy", noPolicyDecision()],
    ["an internal error", internalErrorDecision("boom")],
  ];
  for (const [name, d] of decisions) {
    it(`answers what the object form answers: ${name}`, () => {
      for (const requestId of [undefined, "rid-1", 'a"quoted" id ✓']) {
        const reference = Buffer.from(
          CheckResponse.encode(CheckResponse.fromObject(toCheckResponse(d, requestId))).finish(),
        );
        // Twice: the second answer comes from the parts encoded by the first.
        expect(decoded(encodeCheckResponse(d, requestId))).toEqual(decoded(reference));
        expect(decoded(encodeCheckResponse(d, requestId))).toEqual(decoded(reference));
      }
    });
  }

  it("shares one grant, and its encoded headers, among all requests of one caller", () => {
    const used = [{ value: "k", source: { header: "x-api-key" } }];
    const a = decide(route("orders"), authenticated(acme, used), req, settings);
    const b = decide(route("orders"), authenticated(acme, used), request({}), settings);
    expect(a.grant).toBe(b.grant);
    expect(a.headersToSet).toBe(b.headersToSet);
    expect(a.headersToRemove).toBe(b.headersToRemove);
    expect(a.headersToRemove).toContain("x-api-key");
  });
});
