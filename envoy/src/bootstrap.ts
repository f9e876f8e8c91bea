import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

export const BOOTSTRAP_TEMPLATE_PATH = fileURLToPath(new URL("../bootstrap.yaml", import.meta.url));

export type XdsProtocol = "sotw" | "delta";

export interface BootstrapOptions {
  nodeId: string;
  /** Becomes `node.cluster`; proxies in one group receive the same configuration. */
  group: string;
  xdsHost: string;
  xdsPort: number;
  adminPort: number;
  /** Default 127.0.0.1: the admin API can change and stop the proxy, so it stays on loopback. */
  adminAddress?: string;
  /** "sotw" → api_type GRPC, "delta" → DELTA_GRPC. Default "sotw". */
  protocol?: XdsProtocol;
  /** TLS to the control plane; unset, the xDS connection is plaintext. */
  xdsTls?: XdsTlsOptions;
}

/** Files are paths on the proxy's host, read by Envoy at start. */
export interface XdsTlsOptions {
  /** PEM CA bundle that signed the control plane's certificate. */
  caFile: string;
  /**
   * The name the control plane's certificate must carry as a subject alternative name (an IP
   * address or a DNS name), also sent as SNI when it is a DNS name. Default: `xdsHost`.
   */
  serverName?: string;
  /** This proxy's certificate chain and key (PEM), for a control plane that requires mTLS. */
  certFile?: string;
  keyFile?: string;
}

let template: string | undefined;

/**
 * The xds_cluster's transport socket. Envoy checks only the chain against `trusted_ca` unless SANs
 * are listed, so the server name is always matched. ALPN offers h2, which gRPC needs, so a
 * TLS-terminating load balancer in front of the control plane keeps HTTP/2.
 */
function xdsTransportSocket(tls: XdsTlsOptions, xdsHost: string): object {
  checkText("xdsTls.caFile", tls.caFile);
  if (Boolean(tls.certFile) !== Boolean(tls.keyFile)) {
    throw new Error("xdsTls.certFile and xdsTls.keyFile go together: give both for mTLS, or neither");
  }
  const serverName = tls.serverName ?? xdsHost;
  checkText("xdsTls.serverName", serverName);
  const ip = isIP(serverName) !== 0;
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: {
      "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
      // SNI carries host names only (RFC 6066).
      ...(ip ? {} : { sni: serverName }),
      common_tls_context: {
        alpn_protocols: ["h2"],
        ...(tls.certFile && tls.keyFile
          ? {
              tls_certificates: [
                { certificate_chain: { filename: tls.certFile }, private_key: { filename: tls.keyFile } },
              ],
            }
          : {}),
        validation_context: {
          trusted_ca: { filename: tls.caFile },
          match_typed_subject_alt_names: [
            { san_type: ip ? "IP_ADDRESS" : "DNS", matcher: { exact: serverName } },
          ],
        },
      },
    },
  };
}

export function bootstrapTemplate(): string {
  template ??= readFileSync(BOOTSTRAP_TEMPLATE_PATH, "utf8");
  return template;
}

function checkPort(name: string, port: number, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw new Error(`${name} must be an integer port, got ${String(port)}`);
  }
}

function checkText(name: string, value: string): void {
  if (typeof value !== "string" || value.trim() === "") throw new Error(`${name} must be a non-empty string`);
}

/** Renders envoy/bootstrap.yaml. Strings are emitted as JSON strings, which YAML reads verbatim. */
export function renderBootstrap(o: BootstrapOptions): string {
  checkText("nodeId", o.nodeId);
  checkText("group", o.group);
  checkText("xdsHost", o.xdsHost);
  checkPort("xdsPort", o.xdsPort, false);
  // 0 lets Envoy choose; callers then need --admin-address-path to learn the port.
  checkPort("adminPort", o.adminPort, true);
  const adminAddress = o.adminAddress ?? "127.0.0.1";
  if (!isIP(adminAddress)) throw new Error(`adminAddress must be an IP address, got ${adminAddress}`);
  const protocol = o.protocol ?? "sotw";
  if (protocol !== "sotw" && protocol !== "delta")
    throw new Error(`unknown xDS protocol ${String(protocol)}`);

  const values: Record<string, string> = {
    NODE_ID: JSON.stringify(o.nodeId),
    GROUP: JSON.stringify(o.group),
    ADMIN_ADDRESS: JSON.stringify(adminAddress),
    ADMIN_PORT: String(o.adminPort),
    API_TYPE: protocol === "delta" ? "DELTA_GRPC" : "GRPC",
    XDS_HOST: JSON.stringify(o.xdsHost),
    XDS_PORT: String(o.xdsPort),
    // STATIC requires an IP literal; a name goes through DNS.
    XDS_CLUSTER_TYPE: isIP(o.xdsHost) ? "STATIC" : "STRICT_DNS",
    // A JSON object is a YAML flow mapping.
    XDS_TRANSPORT_SOCKET: o.xdsTls ? JSON.stringify(xdsTransportSocket(o.xdsTls, o.xdsHost)) : "null",
  };

  const rendered = bootstrapTemplate().replace(/\$\{([A-Z_]+)\}/g, (whole, name: string) => {
    const v = values[name];
    if (v === undefined) throw new Error(`bootstrap template has unknown placeholder ${whole}`);
    return v;
  });
  // Catches a template edit that breaks YAML before Envoy reports it with less context.
  parseYaml(rendered);
  return rendered;
}
