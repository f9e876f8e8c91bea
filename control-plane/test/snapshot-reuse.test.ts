import { describe, expect, it } from "vitest";
import { buildSnapshot, TypeUrl, type EncodedResource, type ResourceInput } from "../src/index.js";

const cluster = (name: string, ms: number): ResourceInput => ({
  typeUrl: TypeUrl.Cluster,
  name,
  message: { name, type: "STATIC", connect_timeout: { seconds: 0, nanos: ms * 1e6 } },
});

describe("a snapshot built beside the group's previous one", () => {
  it("keeps the encoding of every resource whose object is unchanged, and encodes the changed ones", () => {
    const before = buildSnapshot("g", [cluster("a", 100), cluster("b", 100)]);
    const after = buildSnapshot("g", [cluster("a", 100), cluster("b", 250)], "", before);
    const [a0, b0] = ["a", "b"].map((n) => before.get(TypeUrl.Cluster).resources.get(n)!) as [
      EncodedResource,
      EncodedResource,
    ];
    const [a1, b1] = ["a", "b"].map((n) => after.get(TypeUrl.Cluster).resources.get(n)!) as [
      EncodedResource,
      EncodedResource,
    ];
    expect(a1).toBe(a0);
    expect(b1).not.toBe(b0);
    expect(b1.version).not.toBe(b0.version);
    // What it would be built from scratch.
    const fresh = buildSnapshot("g", [cluster("a", 100), cluster("b", 250)]);
    expect(after.revision).toBe(fresh.revision);
    expect(Buffer.from(b1.any)).toEqual(Buffer.from(fresh.get(TypeUrl.Cluster).resources.get("b")!.any));
  });

  it("encodes again a resource whose JSON cannot tell its numbers apart (NaN and null both write null)", () => {
    const lb = (v: number | null): ResourceInput => ({
      typeUrl: TypeUrl.Cluster,
      name: "c",
      message: { name: "c", type: "STATIC", common_lb_config: { healthy_panic_threshold: { value: v } } },
    });
    const withNaN = buildSnapshot("g", [lb(Number.NaN)]);
    const withNull = buildSnapshot("g", [lb(null)], "", withNaN);
    expect(withNull.get(TypeUrl.Cluster).resources.get("c")).not.toBe(
      withNaN.get(TypeUrl.Cluster).resources.get("c"),
    );
    expect(withNull.revision).toBe(buildSnapshot("g", [lb(null)]).revision);
  });
});
