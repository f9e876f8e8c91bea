import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, parseDocument } from "yaml";

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
  /**
   * This proxy's gateway identity (`spiffe://portico/gateway/<group>`) and the internal CA, as
   * the static secrets `portico-gateway-identity` and `portico-internal-ca`: what an upstream with
   * `tls.gatewayIdentity` (ext-authz, the rate limiter) is called with and checked against.
   */
  identity?: IdentityFiles;
  /**
   * A listener on 0.0.0.0:<readyPort> answering only `GET /ready`, from the admin interface, for
   * readiness probes from other hosts while the admin interface stays on loopback. Needs a fixed
   * `adminPort`.
   */
  readyPort?: number;
}

/** PEM files on the proxy's host, read by Envoy at start (rotate by restarting). */
export interface IdentityFiles {
  /** Certificate (chain) naming this proxy's gateway group in a URI SAN. */
  certFile: string;
  keyFile: string;
  /** The internal CA, which signed the policy services' certificates. */
  caFile: string;
}

/** Static secret names an upstream's transport socket refers to (SDS by name, no config source). */
export const GATEWAY_IDENTITY_SECRET = "portico-gateway-identity";
export const INTERNAL_CA_SECRET = "portico-internal-ca";

/**
 * The readiness listener's and the admin cluster's names. A leading underscore: no Portico
 * resource name can start with one, so a gateway's own listeners and clusters never collide.
 */
export const READY_LISTENER = "_portico_ready";
export const ADMIN_CLUSTER = "_portico_admin";

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

function identitySecrets(files: IdentityFiles): object[] {
  checkText("identity.certFile", files.certFile);
  checkText("identity.keyFile", files.keyFile);
  checkText("identity.caFile", files.caFile);
  return [
    {
      name: GATEWAY_IDENTITY_SECRET,
      tls_certificate: {
        certificate_chain: { filename: files.certFile },
        private_key: { filename: files.keyFile },
      },
    },
    { name: INTERNAL_CA_SECRET, validation_context: { trusted_ca: { filename: files.caFile } } },
  ];
}

/** Where the ready listener reaches the admin interface: its address, or loopback if it is a wildcard. */
function adminTarget(adminAddress: string): string {
  if (adminAddress === "0.0.0.0") return "127.0.0.1";
  if (adminAddress === "::") return "::1";
  return adminAddress;
}

function readyListener(readyPort: number): object {
  return {
    name: READY_LISTENER,
    address: { socket_address: { address: "0.0.0.0", port_value: readyPort } },
    filter_chains: [
      {
        filters: [
          {
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type":
                "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              stat_prefix: "portico_ready",
              route_config: {
                name: READY_LISTENER,
                virtual_hosts: [
                  {
                    name: "ready",
                    domains: ["*"],
                    // One route: every other path and method, the admin API's included, is a 404.
                    routes: [
                      {
                        match: {
                          path: "/ready",
                          headers: [{ name: ":method", string_match: { exact: "GET" } }],
                        },
                        route: { cluster: ADMIN_CLUSTER, timeout: "2s" },
                      },
                    ],
                  },
                ],
              },
              http_filters: [
                {
                  name: "envoy.filters.http.router",
                  typed_config: {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                  },
                },
              ],
            },
          },
        ],
      },
    ],
  };
}

function adminCluster(address: string, port: number): object {
  return {
    name: ADMIN_CLUSTER,
    type: "STATIC",
    connect_timeout: "1s",
    load_assignment: {
      cluster_name: ADMIN_CLUSTER,
      endpoints: [
        { lb_endpoints: [{ endpoint: { address: { socket_address: { address, port_value: port } } } }] },
      ],
    },
  };
}

/**
 * Renders envoy/bootstrap.yaml. Strings are emitted as JSON strings, which YAML reads verbatim.
 * `identity` and `readyPort` add static resources to the rendered template; without them the
 * output is the template's alone.
 */
export function renderBootstrap(o: BootstrapOptions): string {
  checkText("nodeId", o.nodeId);
  checkText("group", o.group);
  checkText("xdsHost", o.xdsHost);
  checkPort("xdsPort", o.xdsPort, false);
  // 0 lets Envoy choose; callers then need --admin-address-path to learn the port.
  checkPort("adminPort", o.adminPort, true);
  const adminAddress = o.adminAddress ?? "127.0.0.1";
  if (!isIP(adminAddress)) throw new Error(`adminAddress must be an IP address, got ${adminAddress}`);
  if (o.readyPort !== undefined) {
    checkPort("readyPort", o.readyPort, false);
    if (o.adminPort === 0) {
      throw new Error(
        "readyPort needs a fixed adminPort: the ready listener forwards to the admin interface, whose port must be known (adminPort 0 lets Envoy choose it)",
      );
    }
    if (o.readyPort === o.adminPort)
      throw new Error(`readyPort and adminPort must differ, both are ${o.readyPort}`);
  }
  const secrets = o.identity ? identitySecrets(o.identity) : undefined;
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
  if (o.readyPort === undefined && !secrets) {
    parseYaml(rendered);
    return rendered;
  }
  const doc = parseDocument(rendered);
  if (doc.errors.length > 0) throw doc.errors[0]!;
  if (o.readyPort !== undefined) {
    const listeners = doc.createNode([readyListener(o.readyPort)]);
    listeners.commentBefore =
      " Readiness for probes from other hosts: GET /ready only, answered by the admin interface,\n" +
      " which stays on loopback (/quitquitquit and /runtime_modify must not be reachable).";
    doc.setIn(["static_resources", "listeners"], listeners);
    doc.addIn(
      ["static_resources", "clusters"],
      doc.createNode(adminCluster(adminTarget(adminAddress), o.adminPort)),
    );
  }
  if (secrets) {
    const node = doc.createNode(secrets);
    node.commentBefore =
      " This gateway's identity and the internal CA, for upstreams with tls.gatewayIdentity.";
    doc.setIn(["static_resources", "secrets"], node);
  }
  return doc.toString({ lineWidth: 0 });
}
