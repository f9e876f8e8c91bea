import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-tls-"));

/** A fresh self-signed certificate for `host`, made with openssl. */
function certificate(host: string, tag: string): { certificatePem: string; privateKeyPem: string } {
  const key = path.join(dir, `${tag}.key`);
  const crt = path.join(dir, `${tag}.crt`);
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      key,
      "-out",
      crt,
      "-days",
      "2",
      "-subj",
      `/CN=${host}`,
      "-addext",
      `subjectAltName=DNS:${host}`,
    ],
    { stdio: "ignore" },
  );
  return { certificatePem: fs.readFileSync(crt, "utf8"), privateKeyPem: fs.readFileSync(key, "utf8") };
}

function handshake(
  port: number,
  servername: string,
): Promise<{ cn: string; serial: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: "127.0.0.1", port, servername, ALPNProtocols: ["h2", "http/1.1"], rejectUnauthorized: false },
      () => {
        const peer = socket.getPeerCertificate();
        resolve({ cn: String(peer.subject.CN), serial: peer.serialNumber, alpn: socket.alpnProtocol });
        socket.end();
      },
    );
    socket.once("error", reject);
  });
}

/**
 * A TLS connection to `b.example.com` (the certificate whose ticket keys the test sets), offering
 * `session` for resumption: whether it was resumed, and the ticket the server issued.
 */
function resumable(port: number, session?: Buffer): Promise<{ reused: boolean; ticket: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      servername: "b.example.com",
      rejectUnauthorized: false,
      ...(session ? { session } : {}),
    });
    // TLS 1.3 tickets arrive after the handshake (BoringSSL sends them once the client has
    // spoken), read like data: one request, its answer read.
    socket.once("secureConnect", () =>
      socket.write("GET / HTTP/1.1\r\nhost: b.example.com\r\nconnection: close\r\n\r\n"),
    );
    socket.resume();
    const timer = setTimeout(() => reject(new Error("no session ticket within 5 s")), 5_000);
    socket.once("session", (ticket: Buffer) => {
      clearTimeout(timer);
      resolve({ reused: socket.isSessionReused(), ticket });
      socket.end();
    });
    socket.once("error", reject);
  });
}

const ticketKey = () => crypto.randomBytes(80).toString("base64");

/** TLS termination with certificates managed through the admin API and delivered to Envoy by SDS. */
describe("TLS at the edge", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let upstream: HttpUpstream;
  let port: number;

  beforeAll(async () => {
    port = await freePort();
    upstream = await startHttpUpstream("secure-app");
    api = await startAdmin();
    for (const [name, host] of [
      ["a-cert", "a.example.com"],
      ["b-cert", "b.example.com"],
    ] as const) {
      expect(
        (
          await api.call("PUT", `/api/v1/certificates/${name}`, {
            body: { name, ...certificate(host, name) },
          })
        ).status,
      ).toBe(201);
    }
    await api.call("PUT", "/api/v1/gateways/edge", {
      body: {
        name: "edge",
        listeners: [
          {
            name: "https",
            port,
            address: "127.0.0.1",
            protocol: "https",
            certificate: "a-cert",
            sniCertificates: [{ hostnames: ["b.example.com"], certificate: "b-cert" }],
          },
        ],
      },
    });
    await api.call("PUT", "/api/v1/upstreams/app", {
      body: { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] },
    });
    await api.call("PUT", "/api/v1/routes/app", {
      body: { name: "app", gateway: "edge", match: { pathPrefix: "/" }, upstream: "app" },
    });
    envoy = track(await startEnvoy({ nodeId: "edge-tls", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await upstream?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("presents the certificate for each SNI name, and negotiates HTTP/2 by ALPN", async () => {
    const a = await handshake(port, "a.example.com");
    const b = await handshake(port, "b.example.com");
    expect(a.cn).toBe("a.example.com");
    expect(b.cn).toBe("b.example.com");
    expect(a.alpn).toBe("h2");
    // An unknown name gets the default certificate.
    expect((await handshake(port, "other.example.com")).cn).toBe("a.example.com");
    // No certificate material is inlined in the listener: it arrives by SDS.
    const dump = JSON.stringify(await envoy.configDump());
    expect(dump).toContain("a-cert/cert");
    const listeners = (await envoy.configDump()).configs.find((c: any) =>
      c["@type"].endsWith(".ListenersConfigDump"),
    );
    expect(JSON.stringify(listeners)).not.toContain("BEGIN");
  });

  it("rotates a certificate through the admin API without failing a request", async () => {
    const before = await handshake(port, "a.example.com");
    let sent = 0;
    let failed = 0;
    let running = true;
    const agent = new https.Agent({ keepAlive: false, rejectUnauthorized: false });
    const load = (async () => {
      while (running) {
        sent++;
        const ok = await new Promise<boolean>((resolve) => {
          const req = https.get(
            { host: "127.0.0.1", port, path: "/x", servername: "a.example.com", agent },
            (res) => {
              res.resume();
              res.on("end", () => resolve(res.statusCode === 200));
            },
          );
          req.on("error", () => resolve(false));
        });
        if (!ok) failed++;
      }
    })();
    const put = await api.call("PUT", "/api/v1/certificates/a-cert?wait=applied", {
      body: { name: "a-cert", ...certificate("a.example.com", "a-cert-2") },
    });
    expect(put.json.rollout.applied).toBe(true);
    const after = await handshake(port, "a.example.com");
    await new Promise((r) => setTimeout(r, 200));
    running = false;
    await load;
    expect(after.serial).not.toBe(before.serial);
    expect(sent).toBeGreaterThan(10);
    expect(failed).toBe(0);
  });

  it("resumes sessions with the ticket keys set through the admin API, and rotates them by SDS", async () => {
    const b = certificate("b.example.com", "b-cert-tickets");
    const [k1, k2] = [ticketKey(), ticketKey()];
    const put = async (keys: string[]) => {
      const res = await api.call("PUT", "/api/v1/certificates/b-cert?wait=applied", {
        body: { name: "b-cert", ...b, sessionTicketKeys: keys },
      });
      expect(res.status, res.text).toBe(200);
      expect(res.json.rollout.applied).toBe(true);
    };
    await put([k1]);
    const first = await resumable(port);
    expect(first.reused).toBe(false);
    expect((await resumable(port, first.ticket)).reused).toBe(true);
    // A new key first, the old one kept: tickets sealed with the old key still open.
    await put([k2, k1]);
    expect((await resumable(port, first.ticket)).reused).toBe(true);
    // The old key gone: its tickets no longer open, and the new key's do.
    const second = await resumable(port);
    await put([k2]);
    expect((await resumable(port, first.ticket)).reused).toBe(false);
    expect((await resumable(port, second.ticket)).reused).toBe(true);
    // Keys travel as an SDS secret, never inline in the listener.
    const listeners = (await envoy.configDump()).configs.find((c: any) =>
      c["@type"].endsWith(".ListenersConfigDump"),
    );
    expect(JSON.stringify(listeners)).toContain("b-cert/tickets");
  });
});
