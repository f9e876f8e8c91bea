import { isLoopbackHost } from "@portico/contract";
import type { XdsTransport } from "@portico/common";

export { isLoopbackHost };

export type XdsExposure =
  { ok: true; level: "info" | "warn"; message: string } | { ok: false; message: string };

/**
 * Whether xDS may be served on `host` with this transport. Only mTLS authenticates clients;
 * without it anyone who reaches the port reads every gateway's TLS keys and the policy
 * services' keys and can NACK configs, so that is allowed on loopback only, or elsewhere when
 * the operator said so (`insecure`), loudly.
 */
export function checkXdsExposure(o: {
  host: string;
  transport: XdsTransport;
  insecure?: boolean;
}): XdsExposure {
  if (o.transport === "mtls") {
    return {
      ok: true,
      level: "info",
      message: "xDS over mTLS: each client is served only what the identity in its certificate may read",
    };
  }
  const how =
    o.transport === "tls" ? "over TLS without client certificates (no --xds-tls-client-ca)" : "in plaintext";
  if (isLoopbackHost(o.host)) {
    return {
      ok: true,
      level: "info",
      message: `xDS ${how} on loopback: clients are not authenticated, for development on this host only`,
    };
  }
  if (o.insecure) {
    return {
      ok: true,
      level: "warn",
      message:
        `INSECURE: xDS ${how} on ${o.host} (--xds-insecure): no client is authenticated, so any process ` +
        "that reaches this port can read every gateway's TLS private keys, API key hashes and HMAC keys, " +
        "and NACK or stall rollouts. Use --xds-tls-cert, --xds-tls-key and --xds-tls-client-ca",
    };
  }
  return {
    ok: false,
    message:
      `refusing to serve xDS ${how} on ${o.host}: any process that reaches it could read every ` +
      "gateway's TLS private keys and the policy services' keys. Give --xds-tls-cert, --xds-tls-key " +
      "and --xds-tls-client-ca (mTLS with workload identities), bind --xds-host to a loopback address, " +
      "or pass --xds-insecure (PORTICO_XDS_INSECURE=true) to serve it unauthenticated anyway",
  };
}
