// Knocks on an internal port from inside the deployment's network, as a client that should be
// refused (or, for comparison, one that should not): Redis without its password, the xDS port
// without a client certificate, ext-authz or the rate limiter without a gateway certificate.
//
//   node deploy/dist/compose/security-probe.js redis redis:6379 [--user U --password-file F]
//   node deploy/dist/compose/security-probe.js tls control-plane:18000 [--ca F] [--cert F --key F]
//   node deploy/dist/compose/security-probe.js grpc ext-authz:9191 --method /pkg.Service/Method [--ca F] [--cert F --key F]
//
// Prints one JSON line: what the port answered.
import fs from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { hostPortFlag } from "@portico/common";

export interface ProbeResult {
  /** `answered`: the port served this client; `refused`: it did not. */
  outcome: "answered" | "refused";
  /** Redis's reply line, the TLS error code, or the gRPC status details. */
  detail: string;
  /** The gRPC status code (grpc probes). */
  code?: number;
}

export interface ProbeTls {
  /** Name to send as SNI and check in the server's certificate; default the target's host. */
  servername?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

const TIMEOUT_MS = 10_000;
const read = (file: string | undefined) => (file ? fs.readFileSync(file) : undefined);

/** PING, after AUTH when a password is given; answered only by +PONG. */
export function probeRedis(
  target: string,
  auth: { user?: string; passwordFile?: string } = {},
): Promise<ProbeResult> {
  const { host, port } = hostPortFlag(target, "target");
  const password = auth.passwordFile
    ? fs.readFileSync(auth.passwordFile, "utf8").replace(/\r?\n$/, "")
    : undefined;
  const command = (...args: string[]) =>
    `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const lines: string[] = [];
    let buffer = "";
    const expected = password === undefined ? 1 : 2;
    const done = (r: ProbeResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(TIMEOUT_MS, () => done({ outcome: "refused", detail: "no answer" }));
    socket.on("error", (err) =>
      done({ outcome: "refused", detail: (err as NodeJS.ErrnoException).code ?? err.message }),
    );
    socket.on("connect", () => {
      if (password !== undefined) socket.write(command("AUTH", ...(auth.user ? [auth.user] : []), password));
      socket.write(command("PING"));
    });
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      for (let at = buffer.indexOf("\r\n"); at >= 0; at = buffer.indexOf("\r\n")) {
        lines.push(buffer.slice(0, at));
        buffer = buffer.slice(at + 2);
      }
      if (lines.length >= expected) {
        const ping = lines[expected - 1]!;
        done({ outcome: ping === "+PONG" ? "answered" : "refused", detail: ping });
      }
    });
  });
}

/**
 * A TLS connection that then speaks HTTP/2 (as gRPC does): answered once the server sends its
 * first frame, refused when the handshake fails or the server closes first. With TLS 1.3 a server
 * that wants a client certificate says so only after the client's handshake is done, so success
 * is the server's first frame, not the handshake.
 */
export function probeTls(target: string, o: ProbeTls = {}): Promise<ProbeResult> {
  const { host, port } = hostPortFlag(target, "target");
  return new Promise((resolve) => {
    const socket = tls.connect({
      host,
      port,
      servername: o.servername ?? (net.isIP(host) ? undefined : host),
      ca: read(o.ca),
      cert: read(o.cert),
      key: read(o.key),
      ALPNProtocols: ["h2"],
      // Without a CA the server is not checked: the question is only whether it serves us.
      rejectUnauthorized: o.ca !== undefined,
    });
    const done = (r: ProbeResult) => {
      socket.destroy();
      resolve(r);
    };
    socket.setTimeout(TIMEOUT_MS, () => done({ outcome: "refused", detail: "no answer" }));
    socket.on("error", (err) =>
      done({ outcome: "refused", detail: (err as NodeJS.ErrnoException).code ?? err.message }),
    );
    socket.on("close", () => done({ outcome: "refused", detail: "closed by the server" }));
    socket.on("secureConnect", () => {
      // The HTTP/2 client preface and an empty SETTINGS frame.
      socket.write(
        Buffer.concat([
          Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
          Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]),
        ]),
      );
    });
    socket.on("data", () => done({ outcome: "answered", detail: "HTTP/2 frames" }));
  });
}

/** One unary call with an empty request: answered when it got any status but a refusal's. */
export function probeGrpc(target: string, method: string, o: ProbeTls = {}): Promise<ProbeResult> {
  const { host } = hostPortFlag(target, "target");
  const credentials =
    o.ca || o.cert
      ? grpc.credentials.createSsl(read(o.ca) ?? null, read(o.key) ?? null, read(o.cert) ?? null)
      : grpc.credentials.createInsecure();
  const servername = o.servername ?? host;
  const client = new grpc.Client(target, credentials, {
    ...(o.ca || o.cert
      ? { "grpc.ssl_target_name_override": servername, "grpc.default_authority": servername }
      : {}),
  });
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      method,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.alloc(0),
      new grpc.Metadata(),
      { deadline: Date.now() + TIMEOUT_MS },
      (err) => {
        client.close();
        const refusals = [
          grpc.status.UNAVAILABLE,
          grpc.status.UNAUTHENTICATED,
          grpc.status.PERMISSION_DENIED,
        ];
        const code = err?.code ?? grpc.status.OK;
        resolve({
          outcome: refusals.includes(code) ? "refused" : "answered",
          detail: err ? (err.details ?? err.message) : "OK",
          code,
        });
      },
    );
  });
}

export async function runProbe(argv: string[]): Promise<ProbeResult> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      method: { type: "string" },
      servername: { type: "string" },
      ca: { type: "string" },
      cert: { type: "string" },
      key: { type: "string" },
      user: { type: "string" },
      "password-file": { type: "string" },
    },
  });
  const [kind, target] = positionals;
  if (!target) throw new Error("usage: security-probe.js redis|tls|grpc HOST:PORT [options]");
  const t: ProbeTls = { servername: values.servername, ca: values.ca, cert: values.cert, key: values.key };
  switch (kind) {
    case "redis":
      return probeRedis(target, { user: values.user, passwordFile: values["password-file"] });
    case "tls":
      return probeTls(target, t);
    case "grpc":
      if (!values.method) throw new Error("grpc: --method /package.Service/Method is required");
      return probeGrpc(target, values.method, t);
    default:
      throw new Error(`unknown probe '${kind}': redis, tls or grpc`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    console.log(JSON.stringify(await runProbe(process.argv.slice(2))));
  } catch (err) {
    console.error((err as Error).message);
    process.exitCode = 2;
  }
}
