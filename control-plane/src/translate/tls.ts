/**
 * TLS in Envoy: certificates travel as SDS secrets, never inline in listeners or clusters; a
 * listener's and a cluster's transport sockets name them.
 */
import { isIP } from "node:net";
import { TRUST_DOMAIN } from "@portico/common";
import { TYPE_PREFIX } from "@portico/contract";
import { GATEWAY_IDENTITY_SECRET, INTERNAL_CA_SECRET } from "@portico/envoy";
import type { Certificate, Config, Upstream } from "../model/schema.js";
import type { ResourceInput } from "../xds/snapshot.js";
import { ads } from "./feature.js";
import { TypeUrl } from "../xds/types.js";

const DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

/** SDS secret names: one per part of a certificate. */
export function secretName(certificate: string, part: "cert" | "ca" | "tickets"): string {
  return `${certificate}/${part}`;
}

function sdsSecret(name: string): object {
  return { name, sds_config: ads };
}

/** A listener's TLS with one certificate (and its session ticket keys, when it has some). */
export function downstreamTls(config: Config, certificate: string): object {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": TYPE_PREFIX + DOWNSTREAM_TLS,
      common_tls_context: {
        tls_certificate_sds_secret_configs: [sdsSecret(secretName(certificate, "cert"))],
        alpn_protocols: ["h2", "http/1.1"],
      },
      // Shared ticket keys let a client resume its session on any Envoy of the group.
      ...(config.certificates.find((c) => c.name === certificate)?.sessionTicketKeys?.length
        ? { session_ticket_keys_sds_secret_config: sdsSecret(secretName(certificate, "tickets")) }
        : {}),
    },
  };
}

/**
 * A static secret of the Envoy's bootstrap, named without a config source: Envoy takes it from
 * `static_resources.secrets`, and refuses the cluster or listener when the bootstrap has none of
 * that name.
 */
function staticSecret(name: string): object {
  return { name };
}

/** What every gateway's certificate names, and no other workload's: `spiffe://portico/gateway/<group>`. */
export const GATEWAY_URI_PREFIX = `spiffe://${TRUST_DOMAIN}/gateway/`;

/**
 * A listener's mTLS for calls from other Envoys of the fleet: the Envoy's own gateway certificate,
 * and a client certificate required, signed by the internal CA and naming a gateway. Both come
 * from the bootstrap, so neither key nor CA travels over xDS.
 */
export function gatewayIdentityDownstreamTls(): object {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": TYPE_PREFIX + DOWNSTREAM_TLS,
      require_client_certificate: { value: true },
      common_tls_context: {
        tls_certificate_sds_secret_configs: [staticSecret(GATEWAY_IDENTITY_SECRET)],
        combined_validation_context: {
          default_validation_context: {
            match_typed_subject_alt_names: [{ san_type: "URI", matcher: { prefix: GATEWAY_URI_PREFIX } }],
          },
          validation_context_sds_secret_config: staticSecret(INTERNAL_CA_SECRET),
        },
        alpn_protocols: ["h2", "http/1.1"],
      },
    },
  };
}

/**
 * A cluster's TLS to its upstream: SNI, the CA that verifies it, a client certificate. With
 * `gatewayIdentity`, the certificate is the Envoy's own gateway identity and the CA the internal
 * one, both from its bootstrap: neither key nor CA travels over xDS.
 */
export function upstreamTls(u: Upstream): object {
  const tls = u.tls!;
  const sni = tls.sni ?? (isIP(u.endpoints[0]!.host) ? undefined : u.endpoints[0]!.host);
  const clientCertificate = tls.gatewayIdentity
    ? staticSecret(GATEWAY_IDENTITY_SECRET)
    : tls.clientCertificate
      ? sdsSecret(secretName(tls.clientCertificate, "cert"))
      : undefined;
  const ca = tls.gatewayIdentity
    ? staticSecret(INTERNAL_CA_SECRET)
    : tls.ca
      ? sdsSecret(secretName(tls.ca, "ca"))
      : undefined;
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": TYPE_PREFIX + UPSTREAM_TLS,
      ...(sni ? { sni } : {}),
      common_tls_context: {
        ...(clientCertificate ? { tls_certificate_sds_secret_configs: [clientCertificate] } : {}),
        ...(ca
          ? {
              combined_validation_context: {
                default_validation_context: sni
                  ? { match_typed_subject_alt_names: [{ san_type: "DNS", matcher: { exact: sni } }] }
                  : {},
                validation_context_sds_secret_config: ca,
              },
            }
          : {}),
        ...(u.protocol !== "http1" ? { alpn_protocols: ["h2"] } : {}),
      },
    },
  };
}

/** A certificate's secrets: its key pair, its session ticket keys, its CA, whichever it has. */
export function secretResources(cert: Certificate): ResourceInput[] {
  const out: ResourceInput[] = [];
  if (cert.certificatePem && cert.privateKeyPem) {
    const name = secretName(cert.name, "cert");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: {
        name,
        tls_certificate: {
          certificate_chain: { inline_string: cert.certificatePem },
          private_key: { inline_string: cert.privateKeyPem },
        },
      },
    });
  }
  if (cert.sessionTicketKeys?.length) {
    const name = secretName(cert.name, "tickets");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: {
        name,
        session_ticket_keys: {
          keys: cert.sessionTicketKeys.map((k) => ({ inline_bytes: Buffer.from(k, "base64") })),
        },
      },
    });
  }
  if (cert.caPem) {
    const name = secretName(cert.name, "ca");
    out.push({
      typeUrl: TypeUrl.Secret,
      name,
      message: { name, validation_context: { trusted_ca: { inline_string: cert.caPem } } },
    });
  }
  return out;
}
