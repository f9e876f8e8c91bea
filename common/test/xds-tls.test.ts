import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTestPki, removeTestPki, type TestPki } from "@portico/testing";
import { xdsClientTls, xdsServerTls } from "../src/xds-tls.js";

describe("xDS TLS settings", () => {
  let pki: TestPki;
  beforeAll(() => {
    pki = makeTestPki();
  });
  afterAll(() => removeTestPki(pki));

  it("client: nothing given is plaintext, a CA is TLS, a certificate and key are mTLS", () => {
    expect(xdsClientTls({})).toEqual({ transport: "plaintext" });
    const tls = xdsClientTls({ ca: pki.ca.cert });
    expect(tls.transport).toBe("tls");
    expect(tls.credentials?._isSecure()).toBe(true);
    const mtls = xdsClientTls({ ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key });
    expect(mtls.transport).toBe("mtls");
    expect(mtls.credentials?._isSecure()).toBe(true);
  });

  it("server: a certificate is TLS, a client CA turns on mTLS", () => {
    const tls = xdsServerTls({ cert: pki.server.cert, key: pki.server.key });
    expect(tls.transport).toBe("tls");
    expect(tls.credentials._isSecure()).toBe(true);
    expect(
      xdsServerTls({ cert: pki.server.cert, key: pki.server.key, clientCa: pki.ca.cert }).transport,
    ).toBe("mtls");
  });

  it("names the flag and the file of every unusable setting", () => {
    expect(() => xdsClientTls({ cert: pki.client.cert })).toThrow(
      "--xds-tls-cert and --xds-tls-key go together",
    );
    expect(() => xdsClientTls({ key: pki.client.key })).toThrow(
      "--xds-tls-cert and --xds-tls-key go together",
    );
    const missing = path.join(pki.dir, "missing.pem");
    expect(() => xdsClientTls({ ca: missing })).toThrow(`--xds-tls-ca ${missing}: cannot read it (ENOENT`);
    const text = path.join(pki.dir, "not-pem.txt");
    fs.writeFileSync(text, "hello\n");
    expect(() => xdsClientTls({ ca: text })).toThrow(`--xds-tls-ca ${text}: not a PEM file`);
    expect(() => xdsClientTls({ ca: pki.ca.key })).toThrow(`--xds-tls-ca ${pki.ca.key}: not a certificate`);
    expect(() => xdsClientTls({ cert: pki.client.cert, key: pki.client.cert })).toThrow(
      `--xds-tls-key ${pki.client.cert}: not a private key`,
    );
    expect(() => xdsClientTls({ cert: pki.client.cert, key: pki.otherClient.key })).toThrow(
      `--xds-tls-key ${pki.otherClient.key} is not the key of --xds-tls-cert ${pki.client.cert}`,
    );
    expect(() => xdsServerTls({ cert: pki.server.cert, key: pki.client.key })).toThrow(/is not the key of/);
    expect(() => xdsServerTls({ cert: pki.server.cert, key: pki.server.key, clientCa: missing })).toThrow(
      `--xds-tls-client-ca ${missing}: cannot read it`,
    );
  });
});
