import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parseConfigText } from "../src/model/validate.js";
import { buildSnapshots } from "../src/config/publish.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";
import { expectGolden, GOLDEN_DIR as dir, shownResources } from "./translate/golden.js";

describe("translator", () => {
  for (const input of fs.readdirSync(dir).filter((f) => f.endsWith(".yaml"))) {
    const name = input.replace(/\.yaml$/, "");
    it(`matches the golden file for ${name}`, () => {
      const config = parseConfigText(fs.readFileSync(path.join(dir, input), "utf8"));
      const out = Object.fromEntries(
        [...translate(config)].map(([group, resources]) => [group, shownResources(resources)]),
      );
      expectGolden(dir, name, out);
      // Every resource must also encode against Envoy's schema.
      expect(() => buildSnapshots(config)).not.toThrow();
    });
  }

  it("orders routes exact, then longest prefix, then regex", () => {
    const config = parseConfigText(fs.readFileSync(path.join(dir, "two-groups.yaml"), "utf8"));
    const edge = translate(config).get("edge")!;
    const rc = edge.find((r) => r.typeUrl === TypeUrl.Route)!.message as any;
    expect(rc.virtual_hosts[0].routes.map((r: any) => r.name)).toEqual([
      "users-me",
      "orders-long-prefix",
      "users-prefix",
      "orders-regex",
    ]);
  });

  it("gives a group only the clusters its routes use, EDS for IPs and DNS for hostnames", () => {
    const config = parseConfigText(fs.readFileSync(path.join(dir, "two-groups.yaml"), "utf8"));
    const out = translate(config);
    const clusters = (g: string) => out.get(g)!.filter((r) => r.typeUrl === TypeUrl.Cluster);
    expect(clusters("edge").map((c) => c.name)).toEqual(["orders", "users"]);
    expect(clusters("bff-web").map((c) => c.name)).toEqual(["users"]);
    expect((clusters("edge")[0]!.message as any).type).toBe("STRICT_DNS");
    expect((clusters("edge")[1]!.message as any).type).toBe("EDS");
    expect(
      out
        .get("edge")!
        .filter((r) => r.typeUrl === TypeUrl.Endpoint)
        .map((r) => r.name),
    ).toEqual(["users"]);
  });

  it("is deterministic: the same config gives the same snapshot revisions", () => {
    const text = fs.readFileSync(path.join(dir, "two-groups.yaml"), "utf8");
    const a = buildSnapshots(parseConfigText(text));
    const b = buildSnapshots(parseConfigText(text));
    for (const [group, snap] of a) expect(b.get(group)!.revision).toBe(snap.revision);
    const changed = buildSnapshots(
      parseConfigText(text.replace("port: 8080, weight: 3", "port: 8081, weight: 3")),
    );
    expect(changed.get("edge")!.revision).not.toBe(a.get("edge")!.revision);
    // Only the endpoints changed, so only their version moved.
    expect(changed.get("edge")!.get(TypeUrl.Cluster).version).toBe(
      a.get("edge")!.get(TypeUrl.Cluster).version,
    );
    expect(changed.get("edge")!.get(TypeUrl.Endpoint).version).not.toBe(
      a.get("edge")!.get(TypeUrl.Endpoint).version,
    );
  });
});
