import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { renderBootstrap, type BootstrapOptions } from "../src/bootstrap.js";
import { findEnvoy, type FoundEnvoy } from "../src/find-envoy.js";

const execFileAsync = promisify(execFile);

const base: BootstrapOptions = {
  nodeId: "edge-1",
  group: "edge",
  xdsHost: "127.0.0.1",
  xdsPort: 18000,
  adminPort: 19000,
};

describe("renderBootstrap", () => {
  it("fills node, admin and ADS settings", () => {
    const b = parse(renderBootstrap(base));
    expect(b.node).toEqual({ id: "edge-1", cluster: "edge" });
    expect(b.admin.address.socket_address).toEqual({ address: "127.0.0.1", port_value: 19000 });
    const ads = b.dynamic_resources.ads_config;
    expect(ads.api_type).toBe("GRPC");
    expect(ads.transport_api_version).toBe("V3");
    expect(ads.set_node_on_first_message_only).toBe(true);
    expect(ads.grpc_services[0].envoy_grpc.cluster_name).toBe("xds_cluster");
    expect(b.dynamic_resources.lds_config).toEqual({ ads: {}, resource_api_version: "V3" });
    expect(b.dynamic_resources.cds_config).toEqual({ ads: {}, resource_api_version: "V3" });

    const [xds] = b.static_resources.clusters;
    expect(xds.name).toBe("xds_cluster");
    expect(xds.type).toBe("STATIC");
    expect(xds.connect_timeout).toBe("1s");
    const h2 =
      xds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        .explicit_http_config.http2_protocol_options;
    expect(h2.connection_keepalive).toEqual({ interval: "30s", timeout: "5s" });
    expect(xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({
      address: "127.0.0.1",
      port_value: 18000,
    });
  });

  it("uses DELTA_GRPC for the delta protocol", () => {
    expect(parse(renderBootstrap({ ...base, protocol: "delta" })).dynamic_resources.ads_config.api_type).toBe(
      "DELTA_GRPC",
    );
  });

  it("resolves a host name through DNS and honours adminAddress", () => {
    const b = parse(renderBootstrap({ ...base, xdsHost: "localhost", adminAddress: "::1" }));
    expect(b.static_resources.clusters[0].type).toBe("STRICT_DNS");
    expect(b.admin.address.socket_address.address).toBe("::1");
  });

  it("keeps awkward node ids and groups intact", () => {
    const nodeId = `a: b #c "quoted" \${NODE_ID} 'x'`;
    const b = parse(renderBootstrap({ ...base, nodeId, group: "- [g]" }));
    expect(b.node).toEqual({ id: nodeId, cluster: "- [g]" });
  });

  it("rejects bad input", () => {
    expect(() => renderBootstrap({ ...base, nodeId: "" })).toThrow(/nodeId/);
    expect(() => renderBootstrap({ ...base, xdsPort: 0 })).toThrow(/xdsPort/);
    expect(() => renderBootstrap({ ...base, adminPort: 70000 })).toThrow(/adminPort/);
    expect(() => renderBootstrap({ ...base, adminAddress: "localhost" })).toThrow(/adminAddress/);
    expect(() => renderBootstrap({ ...base, protocol: "rest" as never })).toThrow(/protocol/);
  });
});

describe("bootstrap accepted by Envoy (--mode validate)", () => {
  let envoy: FoundEnvoy;
  let dir: string;

  beforeAll(async () => {
    envoy = await findEnvoy();
    dir = await mkdtemp(path.join(tmpdir(), "portico-bootstrap-"));
  }, 300_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function validate(name: string, yaml: string): Promise<{ ok: boolean; output: string }> {
    const file = path.join(dir, `${name}.yaml`);
    await writeFile(file, yaml);
    try {
      const { stdout, stderr } = await execFileAsync(envoy.path, ["--mode", "validate", "-c", file], {
        timeout: 20_000,
      });
      return { ok: true, output: stdout + stderr };
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      return { ok: false, output: `${e.message}\n${e.stdout ?? ""}${e.stderr ?? ""}` };
    }
  }

  const cases: Array<[string, Partial<BootstrapOptions>]> = [
    ["sotw", { protocol: "sotw" }],
    ["delta", { protocol: "delta" }],
    ["dns-host", { xdsHost: "localhost" }],
    ["odd-node-id", { nodeId: `edge/1: "x" #y`, group: "g w" }],
  ];
  for (const [name, overrides] of cases) {
    it(`validates the ${name} bootstrap`, async () => {
      const res = await validate(name, renderBootstrap({ ...base, ...overrides }));
      expect(res.output).toContain("OK");
      expect(res.ok, res.output).toBe(true);
      // Deprecated or unknown fields show up as warnings even when validation passes.
      expect(res.output).not.toMatch(/\]\[(warning|error|critical)\]/);
    });
  }

  it("is strict enough to catch a misspelt field", async () => {
    const broken = renderBootstrap(base).replace("connect_timeout:", "conect_timeout:");
    const res = await validate("broken", broken);
    expect(res.ok).toBe(false);
    expect(res.output).toMatch(/conect_timeout/);
  });
});
