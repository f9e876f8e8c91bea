import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { makeTestPki, removeTestPki, type TestPki } from "@portico/testing";
import {
  ADMIN_CLUSTER,
  GATEWAY_IDENTITY_SECRET,
  INTERNAL_CA_SECRET,
  renderBootstrap,
  type BootstrapOptions,
} from "../src/bootstrap.js";
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

  it("is plaintext to the control plane unless TLS is asked for", () => {
    expect(parse(renderBootstrap(base)).static_resources.clusters[0].transport_socket).toBeNull();
  });

  const tlsContext = (o: Partial<BootstrapOptions>) => {
    const socket = parse(renderBootstrap({ ...base, ...o })).static_resources.clusters[0].transport_socket;
    expect(socket.name).toBe("envoy.transport_sockets.tls");
    expect(socket.typed_config["@type"]).toBe(
      "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    );
    return socket.typed_config;
  };

  it("TLS to an IP address: verifies the CA and the IP SAN, no SNI, offers h2", () => {
    const ctx = tlsContext({ xdsTls: { caFile: "/etc/portico/ca.pem" } });
    expect(ctx.sni).toBeUndefined();
    expect(ctx.common_tls_context).toEqual({
      alpn_protocols: ["h2"],
      validation_context: {
        trusted_ca: { filename: "/etc/portico/ca.pem" },
        match_typed_subject_alt_names: [{ san_type: "IP_ADDRESS", matcher: { exact: "127.0.0.1" } }],
      },
    });
  });

  it("TLS to a host name: sends it as SNI and matches it as a DNS SAN; mTLS adds the client certificate", () => {
    const ctx = tlsContext({
      xdsHost: "cp.portico.internal",
      xdsTls: { caFile: "/ca.pem", certFile: "/envoy.pem", keyFile: "/envoy-key.pem" },
    });
    expect(ctx.sni).toBe("cp.portico.internal");
    expect(ctx.common_tls_context.validation_context.match_typed_subject_alt_names).toEqual([
      { san_type: "DNS", matcher: { exact: "cp.portico.internal" } },
    ]);
    expect(ctx.common_tls_context.tls_certificates).toEqual([
      { certificate_chain: { filename: "/envoy.pem" }, private_key: { filename: "/envoy-key.pem" } },
    ]);
  });

  it("serverName overrides the name checked when the address is not the certificate's name", () => {
    const ctx = tlsContext({
      xdsHost: "10.0.0.7",
      xdsTls: { caFile: "/ca.pem", serverName: "control-plane" },
    });
    expect(ctx.sni).toBe("control-plane");
    expect(ctx.common_tls_context.validation_context.match_typed_subject_alt_names).toEqual([
      { san_type: "DNS", matcher: { exact: "control-plane" } },
    ]);
  });

  it("keeps awkward file names intact", () => {
    const caFile = `/etc/a: b #c/"ca".pem`;
    expect(tlsContext({ xdsTls: { caFile } }).common_tls_context.validation_context.trusted_ca).toEqual({
      filename: caFile,
    });
  });

  it("adds nothing beyond the template unless identity or readyPort is asked for", () => {
    const b = parse(renderBootstrap(base));
    expect(b.static_resources.secrets).toBeUndefined();
    expect(b.static_resources.listeners).toBeUndefined();
    expect(b.static_resources.clusters.map((c: { name: string }) => c.name)).toEqual(["xds_cluster"]);
  });

  it("identity: the gateway's key pair and the internal CA as static secrets, by their agreed names", () => {
    const identity = {
      certFile: "/id/edge.pem",
      keyFile: "/id/edge-key.pem",
      caFile: `/id/a: b #c/"ca".pem`,
    };
    const b = parse(renderBootstrap({ ...base, identity }));
    expect(b.static_resources.secrets).toEqual([
      {
        name: GATEWAY_IDENTITY_SECRET,
        tls_certificate: {
          certificate_chain: { filename: "/id/edge.pem" },
          private_key: { filename: "/id/edge-key.pem" },
        },
      },
      { name: INTERNAL_CA_SECRET, validation_context: { trusted_ca: { filename: identity.caFile } } },
    ]);
    expect([GATEWAY_IDENTITY_SECRET, INTERNAL_CA_SECRET]).toEqual([
      "portico-gateway-identity",
      "portico-internal-ca",
    ]);
    // The xDS connection keeps its own files.
    expect(b.static_resources.clusters[0].transport_socket).toBeNull();
  });

  it("readyPort: a listener on every address whose one route is GET /ready to the admin interface on loopback", () => {
    const b = parse(renderBootstrap({ ...base, readyPort: 8081 }));
    expect(b.admin.address.socket_address).toEqual({ address: "127.0.0.1", port_value: 19000 });
    const [listener] = b.static_resources.listeners;
    expect(listener.address.socket_address).toEqual({ address: "0.0.0.0", port_value: 8081 });
    const hcm = listener.filter_chains[0].filters[0].typed_config;
    const [vhost] = hcm.route_config.virtual_hosts;
    expect(vhost.domains).toEqual(["*"]);
    expect(vhost.routes).toHaveLength(1);
    expect(vhost.routes[0].match).toEqual({
      path: "/ready",
      headers: [{ name: ":method", string_match: { exact: "GET" } }],
    });
    expect(vhost.routes[0].route.cluster).toBe(ADMIN_CLUSTER);
    const admin = b.static_resources.clusters.find((c: { name: string }) => c.name === ADMIN_CLUSTER);
    expect(admin.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({
      address: "127.0.0.1",
      port_value: 19000,
    });
  });

  it("readyPort reaches an admin interface bound to a wildcard through loopback", () => {
    const admin = (adminAddress: string) =>
      parse(renderBootstrap({ ...base, adminAddress, readyPort: 8081 })).static_resources.clusters.find(
        (c: { name: string }) => c.name === ADMIN_CLUSTER,
      ).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address;
    expect(admin("0.0.0.0")).toBe("127.0.0.1");
    expect(admin("::")).toBe("::1");
    expect(admin("::1")).toBe("::1");
  });

  it("rejects bad input", () => {
    expect(() => renderBootstrap({ ...base, adminPort: 0, readyPort: 8081 })).toThrow(
      /readyPort needs a fixed adminPort/,
    );
    expect(() => renderBootstrap({ ...base, readyPort: 19000 })).toThrow(
      /readyPort and adminPort must differ/,
    );
    expect(() => renderBootstrap({ ...base, readyPort: 0 })).toThrow(/readyPort/);
    expect(() =>
      renderBootstrap({ ...base, identity: { certFile: "/c.pem", keyFile: "", caFile: "/ca.pem" } }),
    ).toThrow(/identity.keyFile/);
    expect(() => renderBootstrap({ ...base, xdsTls: { caFile: "" } })).toThrow(/xdsTls.caFile/);
    expect(() => renderBootstrap({ ...base, xdsTls: { caFile: "/ca.pem", certFile: "/c.pem" } })).toThrow(
      /certFile and xdsTls.keyFile go together/,
    );
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
  // Envoy reads the TLS files while validating, so they must be real.
  let pki: TestPki;

  beforeAll(async () => {
    envoy = await findEnvoy();
    dir = await mkdtemp(path.join(tmpdir(), "portico-bootstrap-"));
    pki = makeTestPki();
  }, 300_000);
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    removeTestPki(pki);
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
  cases.push(
    ["tls", { xdsTls: { caFile: "<ca>" } }],
    ["mtls-dns", { xdsHost: "localhost", xdsTls: { caFile: "<ca>", certFile: "<cert>", keyFile: "<key>" } }],
    [
      "identity-and-ready",
      { identity: { certFile: "<cert>", keyFile: "<key>", caFile: "<ca>" }, readyPort: 19001 },
    ],
  );
  /** Fills the PKI's paths in, once beforeAll has made it. */
  const withFiles = (o: Partial<BootstrapOptions>): Partial<BootstrapOptions> => ({
    ...o,
    ...(o.xdsTls
      ? {
          xdsTls: {
            caFile: pki.ca.cert,
            ...(o.xdsTls.certFile ? { certFile: pki.client.cert, keyFile: pki.client.key } : {}),
          },
        }
      : {}),
    ...(o.identity
      ? { identity: { certFile: pki.client.cert, keyFile: pki.client.key, caFile: pki.ca.cert } }
      : {}),
  });
  for (const [name, overrides] of cases) {
    it(`validates the ${name} bootstrap`, async () => {
      const res = await validate(name, renderBootstrap({ ...base, ...withFiles(overrides) }));
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

  it("refuses a TLS bootstrap whose CA file does not exist", async () => {
    const res = await validate(
      "missing-ca",
      renderBootstrap({ ...base, xdsTls: { caFile: path.join(dir, "no-such-ca.pem") } }),
    );
    expect(res.ok).toBe(false);
    expect(res.output).toMatch(/no-such-ca\.pem/);
  });
});
