import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";

/**
 * Who a Portico workload is, as its certificate says in a URI SAN
 * (`spiffe://portico/gateway/<group>`, `spiffe://portico/policy/<role>`, `spiffe://portico/control-plane`):
 * an Envoy of one gateway group, one of the policy services, or the control plane itself.
 * The control plane serves each identity only what it may have; ext-authz and the rate limiter
 * take calls only from gateways.
 */
export type WorkloadIdentity =
  { kind: "gateway"; group: string } | { kind: "policy"; role: PolicyRole } | { kind: "control-plane" };

export const POLICY_ROLES = ["ext-authz", "ratelimit", "aggregator"] as const;
export type PolicyRole = (typeof POLICY_ROLES)[number];

export const TRUST_DOMAIN = "portico";
const PREFIX = `spiffe://${TRUST_DOMAIN}/`;

/** A gateway group as a URI path segment: what `node.cluster` may hold and a SAN can carry unescaped. */
const GROUP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function identityUri(id: WorkloadIdentity): string {
  switch (id.kind) {
    case "gateway":
      if (!GROUP.test(id.group))
        throw new Error(`gateway group '${id.group}' cannot be named in a certificate`);
      return `${PREFIX}gateway/${id.group}`;
    case "policy":
      return `${PREFIX}policy/${id.role}`;
    case "control-plane":
      return `${PREFIX}control-plane`;
  }
}

export function parseIdentityUri(uri: string): WorkloadIdentity | undefined {
  if (!uri.startsWith(PREFIX)) return undefined;
  const parts = uri.slice(PREFIX.length).split("/");
  if (parts.length === 1 && parts[0] === "control-plane") return { kind: "control-plane" };
  if (parts.length !== 2) return undefined;
  const [kind, name] = parts as [string, string];
  if (kind === "gateway" && GROUP.test(name)) return { kind: "gateway", group: name };
  if (kind === "policy" && (POLICY_ROLES as readonly string[]).includes(name))
    return { kind: "policy", role: name as PolicyRole };
  return undefined;
}

export function describeIdentity(id: WorkloadIdentity): string {
  return id.kind === "gateway"
    ? `gateway ${id.group}`
    : id.kind === "policy"
      ? `policy service ${id.role}`
      : "control plane";
}

/** The URI SANs of a subjectAltName string as Node prints it (`URI:…, DNS:…`). */
function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((s) => s.startsWith("URI:"))
    .map((s) => s.slice(4));
}

/**
 * The one Portico identity a certificate names. A certificate that names none, or more than one,
 * names no identity: a workload is exactly one thing.
 */
export function certificateIdentity(
  cert: PeerCertificate | X509Certificate | string | Buffer,
): WorkloadIdentity | undefined {
  const san =
    typeof cert === "string" || Buffer.isBuffer(cert)
      ? new X509Certificate(cert).subjectAltName
      : cert instanceof X509Certificate
        ? cert.subjectAltName
        : cert.subjectaltname;
  const ids = uriSans(san)
    .map(parseIdentityUri)
    .filter((id): id is WorkloadIdentity => id !== undefined);
  return ids.length === 1 ? ids[0] : undefined;
}

/** What a gRPC server call's transport says of its peer. */
export interface PeerAuth {
  /** `ssl` when the call came over TLS, else plaintext. */
  tls: boolean;
  /** The identity in the peer's verified client certificate, when it presented one naming exactly one. */
  identity?: WorkloadIdentity;
}

/**
 * Reads the peer's identity from a grpc-js server call. The certificate is the one the TLS
 * handshake verified against the server's client CA, so what it names is what the peer proved.
 */
export function peerAuth(call: {
  getAuthContext(): { transportSecurityType?: string; sslPeerCertificate?: PeerCertificate } | null;
}): PeerAuth {
  const ctx = call.getAuthContext();
  const tls = ctx?.transportSecurityType === "ssl";
  const cert = ctx?.sslPeerCertificate;
  if (!tls || !cert || !cert.raw) return { tls };
  return { tls, identity: certificateIdentity(cert) };
}
