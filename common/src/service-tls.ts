import * as grpc from "@grpc/grpc-js";
import { BoundedMap } from "./bounded-map.js";
import { HEALTH_SERVICE } from "./grpc-health.js";
import { DEFAULT_REFUSAL_LOGS_PER_SECOND, LogBudget } from "./log-budget.js";
import type { Logger } from "./log.js";
import { certificateIdentity, describeIdentity } from "./workload-identity.js";
import { readCertificate, readKeyPair } from "./xds-tls.js";

/**
 * PEM files a policy service (ext-authz, the rate limiter) serves its gRPC port with, from
 * `--tls-cert`, `--tls-key` and `--tls-client-ca`: all three, or none for plaintext.
 */
export interface ServiceTlsFiles {
  cert?: string;
  key?: string;
  /** The internal CA: a caller must present a certificate it signed. */
  clientCa?: string;
}

/** Why a call was refused: no verified client certificate, or one that names no gateway. */
export type PeerRefusal = "no-certificate" | "not-a-gateway";

export interface ServiceTlsOptions {
  /** Sampled refusal lines (`refusalLogsPerSecond`); none when unset. */
  logger?: Logger;
  /** Told of every refused call, for a metric: logs are sampled, this is not. */
  onRefused?: (reason: PeerRefusal) => void;
  /** Told of each refusal line left out by the log budget. */
  onLogDropped?: () => void;
  refusalLogsPerSecond?: number;
  /** Environment variables' prefix (`PORTICO_AUTHZ_TLS_`), named in the error for a partial set. */
  envPrefix?: string;
}

export interface ServiceTls {
  /** Requires a client certificate signed by the client CA: without one the handshake fails. */
  credentials: grpc.ServerCredentials;
  /** Give it to the server (`new grpc.Server({ interceptors: [interceptor] })`): see `gatewayOnly`. */
  interceptor: grpc.ServerInterceptor;
  transport: "mtls";
}

const FLAGS = { cert: "--tls-cert", key: "--tls-key", clientCa: "--tls-client-ca" } as const;

/**
 * The gRPC port's credentials and the check that goes with them, from the `--tls-*` flags:
 * undefined (plaintext) when none is given, an error naming what is missing for a partial set.
 * The files are read and checked now (certificate and key belong together, the CA parses), so a
 * wrong file stops the start with its flag's name rather than failing every handshake later.
 */
export function serviceTls(files: ServiceTlsFiles, opts: ServiceTlsOptions = {}): ServiceTls | undefined {
  const given = (Object.keys(FLAGS) as (keyof typeof FLAGS)[]).filter((k) => files[k]);
  if (given.length === 0) return undefined;
  if (given.length < 3) {
    const missing = (Object.keys(FLAGS) as (keyof typeof FLAGS)[])
      .filter((k) => !files[k])
      .map((k) => FLAGS[k]);
    const env = opts.envPrefix
      ? ` (env ${opts.envPrefix}CERT, ${opts.envPrefix}KEY, ${opts.envPrefix}CLIENT_CA)`
      : "";
    throw new Error(
      `--tls-cert, --tls-key and --tls-client-ca${env} go together: ${missing.join(" and ")} ` +
        `${missing.length === 1 ? "is" : "are"} missing; give all three for mTLS, or none for plaintext`,
    );
  }
  const pair = readKeyPair(files.cert!, files.key!, { cert: FLAGS.cert, key: FLAGS.key });
  const clientCa = readCertificate(files.clientCa!, FLAGS.clientCa);
  return {
    credentials: grpc.ServerCredentials.createSsl(
      clientCa,
      [{ cert_chain: pair.cert, private_key: pair.key }],
      true,
    ),
    interceptor: gatewayOnly(opts),
    transport: "mtls",
  };
}

interface Verdict {
  ok: boolean;
  code: grpc.status;
  details: string;
  reason?: PeerRefusal;
  /** Who the certificate names, for the log line. */
  peer: string;
}

const NO_CERTIFICATE: Verdict = {
  ok: false,
  code: grpc.status.UNAUTHENTICATED,
  details: "a client certificate from the internal CA is required",
  reason: "no-certificate",
  peer: "no verified certificate",
};

/**
 * The HTTP/2 session (one TLS connection) a call arrived on. grpc-js hands the first interceptor
 * its base call, which holds the stream, but does not type it; undefined wherever that differs,
 * and verdicts are then kept per certificate only.
 */
function sessionOf(call: grpc.ServerInterceptingCallInterface): object | undefined {
  const session = (call as unknown as { stream?: { session?: unknown } }).stream?.session;
  return typeof session === "object" && session !== null ? session : undefined;
}

/** Distinct client certificates whose verdicts are kept: a fleet's gateways, with room to spare. */
const VERDICTS_KEPT = 256;

const HEALTH_PREFIX = `/${HEALTH_SERVICE}/`;

/**
 * A server interceptor that lets a call through only when the peer's verified client certificate
 * names a gateway (`spiffe://portico/gateway/<group>`): anything else gets PERMISSION_DENIED (a
 * certificate naming another identity, or none) or UNAUTHENTICATED (no certificate), before the
 * handler runs, so a refused ShouldRateLimit spends no quota and a refused Check runs no policy.
 *
 * `grpc.health.v1.Health` answers any peer whose certificate the handshake verified: what it says
 * (serving or not) is no secret, and a prober with an internal certificate need not be a gateway.
 * Probes without a certificate use the plaintext ops port's `/readyz` instead.
 *
 * A verdict is kept per connection, so a call on a known connection costs one WeakMap lookup and
 * no certificate read, and per certificate (by its SHA-256 fingerprint) for new connections of a
 * known peer; an admitted call is passed on unwrapped.
 */
export function gatewayOnly(opts: ServiceTlsOptions = {}): grpc.ServerInterceptor {
  const verdicts = new BoundedMap<string, Verdict>(VERDICTS_KEPT);
  const budget = new LogBudget(
    opts.refusalLogsPerSecond ?? DEFAULT_REFUSAL_LOGS_PER_SECOND,
    Date.now,
    opts.onLogDropped,
  );

  // One TLS connection is one peer: its verdict holds for every call on it, and reading the peer
  // certificate (which grpc-js does anew on each getAuthContext) costs ~50 µs a call.
  const bySession = new WeakMap<object, Verdict>();

  const verdictOf = (call: grpc.ServerInterceptingCallInterface): Verdict => {
    const session = sessionOf(call);
    const known = session && bySession.get(session);
    if (known) return known;
    const verdict = certificateVerdict(call);
    if (session) bySession.set(session, verdict);
    return verdict;
  };

  const certificateVerdict = (call: grpc.ServerInterceptingCallInterface): Verdict => {
    const ctx = call.getAuthContext();
    const cert = ctx?.sslPeerCertificate;
    if (ctx?.transportSecurityType !== "ssl" || !cert?.raw) return NO_CERTIFICATE;
    const cached = verdicts.get(cert.fingerprint256);
    if (cached) return cached;
    const identity = certificateIdentity(cert);
    const verdict: Verdict =
      identity?.kind === "gateway"
        ? { ok: true, code: grpc.status.OK, details: "", peer: describeIdentity(identity) }
        : {
            ok: false,
            code: grpc.status.PERMISSION_DENIED,
            details: `only gateways may call this service; the client certificate names ${
              identity ? describeIdentity(identity) : "no single Portico identity"
            }`,
            reason: "not-a-gateway",
            peer: identity ? describeIdentity(identity) : "no Portico identity",
          };
    verdicts.set(cert.fingerprint256, verdict);
    return verdict;
  };

  const refuse = (
    method: string,
    call: grpc.ServerInterceptingCallInterface,
    verdict: Verdict,
  ): grpc.ServerInterceptingCall => {
    opts.onRefused?.(verdict.reason!);
    const room = opts.logger ? budget.take() : undefined;
    if (room) {
      opts.logger!.warn(
        {
          method,
          peer: call.getPeer(),
          identity: verdict.peer,
          code: grpc.status[verdict.code],
          ...(room.dropped ? { dropped: room.dropped } : {}),
        },
        "call refused: the caller is not a gateway",
      );
    }
    return new grpc.ServerInterceptingCall(call, {
      // The handler never sees the call: its metadata is not passed on, the status ends it.
      start: (next) =>
        next({
          onReceiveMetadata: () => call.sendStatus({ code: verdict.code, details: verdict.details }),
          onReceiveMessage: () => {},
          onReceiveHalfClose: () => {},
        }),
    });
  };

  return (method, call) => {
    const verdict = verdictOf(call);
    if (verdict.ok || (verdict !== NO_CERTIFICATE && method.path.startsWith(HEALTH_PREFIX))) {
      // grpc-js only uses the call's interface: handing it on as is adds nothing per call.
      return call as grpc.ServerInterceptingCall;
    }
    return refuse(method.path, call, verdict);
  };
}
