import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";

/** How an xDS connection is protected: for logs, so an operator sees which mode is on. */
export type XdsTransport = "plaintext" | "tls" | "mtls";

/** PEM files a policy service uses towards the control plane; all unset means plaintext. */
export interface XdsClientTlsFiles {
  /** CA that signed the control plane's certificate; unset: the system's trusted roots. */
  ca?: string;
  /** Client certificate (chain) and key, for a control plane that requires mTLS. */
  cert?: string;
  key?: string;
}

/** PEM files the control plane serves xDS with. */
export interface XdsServerTlsFiles {
  cert: string;
  key: string;
  /** CA that client certificates must be signed by; set, clients without one are refused (mTLS). */
  clientCa?: string;
}

function readPem(file: string, flag: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new Error(`${flag} ${file}: cannot read it (${(err as Error).message})`, { cause: err });
  }
  if (!pem.includes("-----BEGIN ")) throw new Error(`${flag} ${file}: not a PEM file`);
  return pem;
}

/** A PEM certificate (chain) file, checked to parse, so a wrong file stops the start naming its flag. */
export function readCertificate(file: string, flag: string): Buffer {
  const pem = readPem(file, flag);
  try {
    new X509Certificate(pem);
  } catch (err) {
    throw new Error(`${flag} ${file}: not a certificate (${(err as Error).message})`, { cause: err });
  }
  return pem;
}

/**
 * Reads a certificate and its key, and checks they belong together: grpc-js would otherwise
 * report a mismatch only as a failed bind or an opaque handshake error.
 */
export function readKeyPair(
  certFile: string,
  keyFile: string,
  flags: { cert: string; key: string },
): { cert: Buffer; key: Buffer } {
  const cert = readCertificate(certFile, flags.cert);
  const key = readPem(keyFile, flags.key);
  let matches: boolean;
  try {
    matches = new X509Certificate(cert).checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new Error(`${flags.key} ${keyFile}: not a private key (${(err as Error).message})`, { cause: err });
  }
  if (!matches) throw new Error(`${flags.key} ${keyFile} is not the key of ${flags.cert} ${certFile}`);
  return { cert, key };
}

/**
 * Channel credentials for a policy service's xDS client, from the `--xds-tls-*` flags: nothing
 * given is plaintext (the control plane on loopback); a CA alone is TLS; a certificate and key
 * add a client certificate for a control plane that requires mTLS. The control plane's
 * certificate must name the host of the `--xds` address.
 */
export function xdsClientTls(files: XdsClientTlsFiles): {
  credentials?: grpc.ChannelCredentials;
  transport: XdsTransport;
} {
  if (!files.ca && !files.cert && !files.key) return { transport: "plaintext" };
  if (Boolean(files.cert) !== Boolean(files.key)) {
    throw new Error("--xds-tls-cert and --xds-tls-key go together: give both for mTLS, or neither");
  }
  const ca = files.ca ? readCertificate(files.ca, "--xds-tls-ca") : null;
  if (files.cert && files.key) {
    const pair = readKeyPair(files.cert, files.key, { cert: "--xds-tls-cert", key: "--xds-tls-key" });
    return { credentials: grpc.credentials.createSsl(ca, pair.key, pair.cert), transport: "mtls" };
  }
  return { credentials: grpc.credentials.createSsl(ca), transport: "tls" };
}

/**
 * Server credentials for the control plane's xDS port. With a client CA, a client must present a
 * certificate signed by it or the handshake fails, so no unauthenticated process can read the
 * fleet's config (which includes API key hashes and upstream addresses).
 */
export function xdsServerTls(files: XdsServerTlsFiles): {
  credentials: grpc.ServerCredentials;
  transport: XdsTransport;
} {
  const pair = readKeyPair(files.cert, files.key, { cert: "--xds-tls-cert", key: "--xds-tls-key" });
  const clientCa = files.clientCa ? readCertificate(files.clientCa, "--xds-tls-client-ca") : null;
  return {
    credentials: grpc.ServerCredentials.createSsl(
      clientCa,
      [{ cert_chain: pair.cert, private_key: pair.key }],
      clientCa !== null,
    ),
    transport: clientCa ? "mtls" : "tls",
  };
}
