import fs from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeIdentityCert, makeTestPki, removeTestPki, type CertFiles, type TestPki } from "@portico/testing";
import { HealthService, healthServiceDefinition } from "../src/grpc-health.js";
import { serviceTls, type PeerRefusal } from "../src/service-tls.js";

/** A unary method whose messages are raw bytes: the service under the check needs no schema. */
const ECHO: grpc.MethodDefinition<Buffer, Buffer> = {
  path: "/portico.test.Echo/Say",
  requestStream: false,
  responseStream: false,
  requestSerialize: (b) => b,
  requestDeserialize: (b) => b,
  responseSerialize: (b) => b,
  responseDeserialize: (b) => b,
};

function call<Req, Res>(
  address: string,
  creds: grpc.ChannelCredentials,
  m: { path: string; requestSerialize: (v: Req) => Buffer; responseDeserialize: (b: Buffer) => Res },
  req: Req,
): Promise<Res> {
  const client = new grpc.Client(address, creds);
  return new Promise<Res>((resolve, reject) =>
    client.makeUnaryRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      req,
      new grpc.Metadata(),
      { deadline: Date.now() + 5_000 },
      (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res!);
      },
    ),
  );
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => grpc.status.OK,
    (e: grpc.ServiceError) => e.code,
  );

describe("serviceTls", () => {
  let pki: TestPki;
  let server: CertFiles;
  let gateway: CertFiles;
  let policy: CertFiles;
  let noIdentity: CertFiles;

  beforeAll(() => {
    pki = makeTestPki();
    server = makeIdentityCert(pki, "svc", "spiffe://portico/policy/ratelimit", {
      usage: "serverAuth",
      extraSan: "IP:127.0.0.1",
    });
    gateway = makeIdentityCert(pki, "gw", "spiffe://portico/gateway/edge");
    policy = makeIdentityCert(pki, "agg", "spiffe://portico/policy/aggregator");
    noIdentity = pki.client;
  });
  afterAll(() => removeTestPki(pki));

  it("none of the flags is plaintext; a partial set names what is missing", () => {
    expect(serviceTls({})).toBeUndefined();
    expect(() => serviceTls({ cert: server.cert, key: server.key })).toThrow(
      "--tls-cert, --tls-key and --tls-client-ca go together: --tls-client-ca is missing; give all three for mTLS, or none for plaintext",
    );
    expect(() => serviceTls({ clientCa: pki.ca.cert }, { envPrefix: "PORTICO_X_TLS_" })).toThrow(
      "--tls-cert, --tls-key and --tls-client-ca (env PORTICO_X_TLS_CERT, PORTICO_X_TLS_KEY, PORTICO_X_TLS_CLIENT_CA) go together: --tls-cert and --tls-key are missing",
    );
  });

  it("names the flag and the file of an unusable one", () => {
    const missing = path.join(pki.dir, "missing.pem");
    expect(() => serviceTls({ cert: server.cert, key: server.key, clientCa: missing })).toThrow(
      `--tls-client-ca ${missing}: cannot read it`,
    );
    expect(() => serviceTls({ cert: server.cert, key: gateway.key, clientCa: pki.ca.cert })).toThrow(
      `--tls-key ${gateway.key} is not the key of --tls-cert ${server.cert}`,
    );
    expect(() => serviceTls({ cert: server.cert, key: server.key, clientCa: pki.ca.key })).toThrow(
      `--tls-client-ca ${pki.ca.key}: not a certificate`,
    );
  });

  describe("on a server", () => {
    let grpcServer: grpc.Server;
    let address: string;
    let handled = 0;
    const refused: PeerRefusal[] = [];
    const lines: Record<string, unknown>[] = [];
    const creds = (client?: CertFiles) =>
      client
        ? grpc.credentials.createSsl(
            fs.readFileSync(pki.ca.cert),
            fs.readFileSync(client.key),
            fs.readFileSync(client.cert),
          )
        : grpc.credentials.createSsl(fs.readFileSync(pki.ca.cert));

    beforeAll(async () => {
      const logger = pino(
        { level: "info" },
        new Writable({
          write(chunk: Buffer, _enc, done) {
            lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
            done();
          },
        }),
      );
      const tls = serviceTls(
        { cert: server.cert, key: server.key, clientCa: pki.ca.cert },
        { logger, onRefused: (r) => refused.push(r) },
      )!;
      expect(tls.transport).toBe("mtls");
      grpcServer = new grpc.Server({ interceptors: [tls.interceptor] });
      grpcServer.addService(
        { Say: ECHO },
        {
          Say: (c: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
            handled++;
            cb(null, c.request);
          },
        },
      );
      const health = new HealthService([], "SERVING");
      grpcServer.addService(health.definition(), health.implementation());
      const port = await new Promise<number>((resolve, reject) =>
        grpcServer.bindAsync("127.0.0.1:0", tls.credentials, (err, p) => (err ? reject(err) : resolve(p))),
      );
      address = `127.0.0.1:${port}`;
    });
    afterAll(() => grpcServer?.forceShutdown());

    it("answers a gateway, call after call", async () => {
      for (const word of ["one", "two", "three"])
        expect((await call(address, creds(gateway), ECHO, Buffer.from(word))).toString()).toBe(word);
    });

    it("refuses other identities with PERMISSION_DENIED before the handler runs, counted and logged", async () => {
      const before = handled;
      refused.length = 0;
      expect(await codeOf(call(address, creds(policy), ECHO, Buffer.from("x")))).toBe(
        grpc.status.PERMISSION_DENIED,
      );
      expect(await codeOf(call(address, creds(noIdentity), ECHO, Buffer.from("x")))).toBe(
        grpc.status.PERMISSION_DENIED,
      );
      expect(handled).toBe(before);
      expect(refused).toEqual(["not-a-gateway", "not-a-gateway"]);
      expect(lines[0]).toMatchObject({
        msg: "call refused: the caller is not a gateway",
        method: ECHO.path,
        identity: "policy service aggregator",
        code: "PERMISSION_DENIED",
      });
    });

    it("refuses a client without a certificate at the handshake", async () => {
      expect(await codeOf(call(address, creds(), ECHO, Buffer.from("x")))).toBe(grpc.status.UNAVAILABLE);
    });

    it("answers health to any client whose certificate the handshake verified", async () => {
      const check = healthServiceDefinition().Check as unknown as grpc.MethodDefinition<
        { service: string },
        { status: string }
      >;
      for (const client of [gateway, policy, noIdentity])
        expect(await call(address, creds(client), check, { service: "" })).toEqual({ status: "SERVING" });
    });
  });
});
