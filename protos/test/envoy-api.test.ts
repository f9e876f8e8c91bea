// Envoy's API comes from the compiled descriptors of a pinned xds-protos release (Envoy's
// data-plane API); these are the fields Portico relies on that older copies of the API lack, and
// the conversions protobufjs needs help with.
import fs from "node:fs";
import { describe, expect, it } from "vitest";
import {
  decodeMessage,
  encodeMessage,
  envoyApiDescriptorFile,
  loadProtoRoot,
  messageType,
} from "../src/index.js";

describe("Envoy's API descriptors", () => {
  it("are built for the pinned xds-protos release", () => {
    const pin = JSON.parse(
      fs.readFileSync(new URL("../scripts/envoy-api-pin.json", import.meta.url), "utf8"),
    ) as {
      version: string;
    };
    expect(fs.readFileSync(`${envoyApiDescriptorFile()}.version`, "utf8").trim()).toBe(pin.version);
  });

  it("have the fields Portico uses from Envoy's current API", () => {
    const rls = loadProtoRoot(["envoy/service/ratelimit/v3/rls.proto"]);
    const unit = rls.lookupEnum("envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit");
    expect(Object.keys(unit.values)).toEqual(
      expect.arrayContaining(["SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR"]),
    );
    const descriptor = rls.lookupType("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor");
    expect(descriptor.fields["hits_addend"]?.type).toBe(".google.protobuf.UInt64Value");
    expect(
      rls.lookupType("envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus").fields["quota"],
    ).toBeDefined();

    const local = messageType("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit");
    expect(local.fields["max_dynamic_descriptors"]).toBeDefined();
    expect(local.fields["descriptors"]).toBeDefined();
    const jwt = messageType("envoy.extensions.filters.http.jwt_authn.v3.JwtProvider");
    for (const f of ["local_jwks", "jwt_cache_config", "claim_to_headers", "forward_payload_header"]) {
      expect(jwt.fields[f], f).toBeDefined();
    }
  });

  it("decode maps as objects, as the .proto declares them", () => {
    const root = loadProtoRoot(["envoy/service/auth/v3/external_auth.proto"]);
    const check = root.lookupType("envoy.service.auth.v3.CheckRequest");
    const bytes = check
      .encode(
        check.fromObject({
          attributes: {
            request: { http: { headers: { "x-api-key": "k" } } },
            context_extensions: { policy: "orders", scopes: "" },
          },
        }),
      )
      .finish();
    const decoded = check.decode(bytes) as unknown as {
      attributes: { context_extensions: Record<string, string>; request: { http: { headers: object } } };
    };
    expect(Array.isArray(decoded.attributes.context_extensions)).toBe(false);
    expect({ ...decoded.attributes.context_extensions }).toEqual({ policy: "orders", scopes: "" });
    expect({ ...decoded.attributes.request.http.headers }).toEqual({ "x-api-key": "k" });
  });

  it("round-trips a Struct, a map of well-known type", () => {
    const bytes = encodeMessage("google.protobuf.Struct", { fields: { a: { stringValue: "b" } } });
    expect(decodeMessage("google.protobuf.Struct", bytes)).toEqual({ fields: { a: { stringValue: "b" } } });
  });

  it("say which file is missing instead of loading half an API", () => {
    expect(() => loadProtoRoot(["envoy/no/such/v3/thing.proto"])).toThrow(/thing\.proto/);
  });
});
