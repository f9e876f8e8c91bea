import { describe, expect, it } from "vitest";
import { ConfigError } from "../src/model/errors.js";
import { parseConfigText } from "../src/model/validate.js";

function problems(text: string): { field: string; reason: string }[] {
  try {
    parseConfigText(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error("expected the config to be refused");
}

const base = `
gateways:
  - name: edge
    listeners: [{ name: http, port: 10000 }]
upstreams:
  - name: users
    endpoints: [{ host: 127.0.0.1, port: 8080 }]
routes:
  - name: users
    gateway: edge
    match: { pathPrefix: /users }
    upstream: users
`;

describe("config validation", () => {
  it("accepts a good config and fills in defaults", () => {
    const c = parseConfigText(base);
    expect(c.upstreams[0]!.protocol).toBe("http1");
    expect(c.gateways[0]!.listeners[0]!.address).toBe("0.0.0.0");
  });

  it("names the line of malformed YAML", () => {
    const p = problems("gateways: [\n  - name: edge\n    listeners: {");
    expect(p[0]!.field).toMatch(/^line \d+, column \d+$/);
  });

  it("names an unknown field", () => {
    expect(problems(base.replace("upstream: users", "upstream: users\n    upstrem: x"))).toEqual([
      { field: "routes[0].upstrem", reason: "unknown field (upstrem)" },
    ]);
  });

  it("names a route to a missing upstream", () => {
    expect(problems(base.replace("upstream: users", "upstream: nope"))).toEqual([
      { field: "routes[0].upstream", reason: "no upstream named 'nope'" },
    ]);
  });

  it("reports several problems at once: bad port, duplicate port, missing gateway, two matches", () => {
    const p = problems(`
gateways:
  - name: edge
    listeners: [{ name: a, port: 70000 }, { name: b, port: 80 }, { name: c, port: 80 }]
upstreams: [{ name: u, endpoints: [{ host: h, port: 1 }] }]
routes:
  - { name: r, gateway: nowhere, match: { path: /a, pathPrefix: /b }, upstream: u }
`);
    const fields = p.map((x) => x.field);
    expect(fields).toContain("gateways[0].listeners[0].port");
    expect(fields).toContain("routes[0].match");
  });

  it("checks references and duplicates once the shape is right", () => {
    const p = problems(`
gateways:
  - name: edge
    listeners: [{ name: b, port: 80 }, { name: c, port: 80 }]
upstreams: [{ name: u, endpoints: [{ host: h, port: 1 }] }, { name: u, endpoints: [{ host: h, port: 2 }] }]
routes:
  - { name: r, gateway: nowhere, match: { pathRegex: "([a-z" }, upstream: u }
`);
    expect(p).toEqual([
      { field: "upstreams[1].name", reason: "upstream 'u' is already defined at upstreams[0]" },
      { field: "routes[0].gateway", reason: "no gateway named 'nowhere'" },
      {
        field: "gateways[0].listeners[1].port",
        reason: "port 80 is already used by listener 'b' of this gateway",
      },
      expect.objectContaining({ field: "routes[0].match.pathRegex" }),
    ]);
  });

  it("refuses regexes RE2 cannot compile, which Envoy would refuse", () => {
    const p = problems(base.replace("match: { pathPrefix: /users }", 'match: { pathRegex: "/(?<=x)y" }'));
    expect(p).toEqual([expect.objectContaining({ field: "routes[0].match.pathRegex" })]);
    expect(p[0]!.reason).toMatch(/RE2/);
    const backref = problems(
      base.replace("match: { pathPrefix: /users }", 'match: { pathRegex: "/(a)\\\\1" }'),
    );
    expect(backref[0]!.field).toBe("routes[0].match.pathRegex");
  });

  it("takes tls.gatewayIdentity alone: not with a CA or a client certificate of its own", () => {
    const withTls = (tls: string) =>
      base.replace(
        "endpoints: [{ host: 127.0.0.1, port: 8080 }]",
        `endpoints: [{ host: 127.0.0.1, port: 8080 }]\n    tls: ${tls}`,
      );
    expect(
      parseConfigText(withTls("{ gatewayIdentity: true, sni: users.internal }")).upstreams[0]!.tls,
    ).toEqual({
      gatewayIdentity: true,
      sni: "users.internal",
    });
    const certs = `
certificates:
  - { name: users-ca, caPem: "-----BEGIN CERTIFICATE-----" }
  - { name: users-client, certificatePem: "-----BEGIN CERTIFICATE-----", privateKeyPem: "-----BEGIN PRIVATE KEY-----" }
`;
    const p = problems(
      withTls("{ gatewayIdentity: true, ca: users-ca, clientCertificate: users-client }") + certs,
    );
    expect(p).toEqual([
      { field: "upstreams[0].tls.ca", reason: expect.stringMatching(/ca or gatewayIdentity, not both/) },
      {
        field: "upstreams[0].tls.clientCertificate",
        reason: expect.stringMatching(/clientCertificate or gatewayIdentity, not both/),
      },
    ]);
  });

  describe("listeners that trust identity headers", () => {
    const withListener = (listener: string) =>
      base.replace("listeners: [{ name: http, port: 10000 }]", `listeners: [${listener}]`);

    it("refuses one that any peer on the network reaches, naming the field and how to fix it", () => {
      for (const address of ["0.0.0.0", "10.1.2.3", "::", "fd00::1"]) {
        const p = problems(
          withListener(`{ name: inbound, port: 15001, address: "${address}", trustIdentityHeaders: true }`),
        );
        expect(p, address).toEqual([
          {
            field: "gateways[0].listeners[0].trustIdentityHeaders",
            reason: expect.stringMatching(
              /could send identity headers and pass as any consumer: set gatewayIdentity .* or bind the listener to 127\.0\.0\.1 or ::1/,
            ),
          },
        ]);
      }
      // The default address is every interface.
      expect(
        problems(withListener("{ name: inbound, port: 15001, trustIdentityHeaders: true }"))[0]!.field,
      ).toBe("gateways[0].listeners[0].trustIdentityHeaders");
    });

    it("takes one on loopback, or one that accepts gateways only over mTLS", () => {
      for (const address of ["127.0.0.1", "127.0.0.2", "::1"]) {
        const c = parseConfigText(
          withListener(`{ name: inbound, port: 15001, address: "${address}", trustIdentityHeaders: true }`),
        );
        expect(c.gateways[0]!.listeners[0]!.trustIdentityHeaders, address).toBe(true);
      }
      const mtls = parseConfigText(
        withListener(
          "{ name: inbound, port: 15001, protocol: https, gatewayIdentity: true, trustIdentityHeaders: true }",
        ),
      );
      expect(mtls.gateways[0]!.listeners[0]).toMatchObject({
        gatewayIdentity: true,
        trustIdentityHeaders: true,
      });
    });

    it("gatewayIdentity: an https listener with the Envoy's own certificate, none of the config's", () => {
      const certs = `
certificates:
  - { name: api, certificatePem: "-----BEGIN CERTIFICATE-----", privateKeyPem: "-----BEGIN PRIVATE KEY-----" }
`;
      expect(problems(withListener("{ name: inbound, port: 15001, gatewayIdentity: true }"))).toEqual([
        { field: "gateways[0].listeners[0].protocol", reason: expect.stringMatching(/set protocol https/) },
      ]);
      expect(
        problems(
          withListener(
            "{ name: inbound, port: 15001, protocol: https, gatewayIdentity: true, certificate: api, sniCertificates: [{ hostnames: [a.example], certificate: api }] }",
          ) + certs,
        ),
      ).toEqual([
        {
          field: "gateways[0].listeners[0].certificate",
          reason: expect.stringMatching(/certificate or gatewayIdentity, not both/),
        },
        {
          field: "gateways[0].listeners[0].sniCertificates",
          reason: expect.stringMatching(/remove sniCertificates/),
        },
      ]);
      expect(problems(withListener("{ name: inbound, port: 15001, protocol: https }"))).toEqual([
        {
          field: "gateways[0].listeners[0].certificate",
          reason: "an https listener needs a certificate, or gatewayIdentity",
        },
      ]);
    });
  });
});
