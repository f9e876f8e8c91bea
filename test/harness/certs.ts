import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** PEM files on disk; the keys live only in a temp directory for the test run. */
export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  dir: string;
  /** The CA the control plane trusts for clients and the clients trust for the server. */
  ca: CertFiles;
  /** The control plane: SANs IP 127.0.0.1, IP ::1 and DNS localhost. */
  server: CertFiles;
  /** A client (Envoy or a policy service) signed by `ca`. */
  client: CertFiles;
  /** Another CA, unknown to the control plane, and a client it signed. */
  otherCa: CertFiles;
  otherClient: CertFiles;
}

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
  } catch (err) {
    const e = err as Error & { stderr?: Buffer };
    throw new Error(`openssl ${args.join(" ")} failed: ${e.stderr?.toString() || e.message}`, { cause: err });
  }
}

/** A self-signed CA (P-256, valid two days). */
function makeCa(dir: string, name: string, cn: string): CertFiles {
  const files = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      files.key,
      "-out",
      files.cert,
      "-days",
      "2",
      "-subj",
      `/CN=${cn}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ],
    dir,
  );
  return files;
}

/** A leaf certificate signed by `ca`, with the given SANs and extended key usage. */
function makeLeaf(
  dir: string,
  name: string,
  ca: CertFiles,
  o: { cn: string; san: string; usage: "serverAuth" | "clientAuth" | "serverAuth,clientAuth" },
): CertFiles {
  const files = { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  fs.writeFileSync(
    ext,
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature",
      `extendedKeyUsage=${o.usage}`,
      `subjectAltName=${o.san}`,
    ].join("\n"),
  );
  openssl(
    [
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      files.key,
      "-out",
      csr,
      "-subj",
      `/CN=${o.cn}`,
    ],
    dir,
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      csr,
      "-CA",
      ca.cert,
      "-CAkey",
      ca.key,
      "-set_serial",
      `0x${Date.now().toString(16)}${name.length}`,
      "-days",
      "2",
      "-extfile",
      ext,
      "-out",
      files.cert,
    ],
    dir,
  );
  return files;
}

/** Makes a fresh CA, server and client certificates with openssl in a new temp directory. */
export function makeTestPki(): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-pki-"));
  const ca = makeCa(dir, "ca", "Portico test CA");
  const otherCa = makeCa(dir, "other-ca", "Somebody else's CA");
  return {
    dir,
    ca,
    server: makeLeaf(dir, "server", ca, {
      cn: "control-plane",
      san: "IP:127.0.0.1,IP:::1,DNS:localhost",
      usage: "serverAuth",
    }),
    client: makeLeaf(dir, "client", ca, { cn: "fleet-member", san: "DNS:fleet-member", usage: "clientAuth" }),
    otherCa,
    otherClient: makeLeaf(dir, "other-client", otherCa, {
      cn: "intruder",
      san: "DNS:intruder",
      usage: "clientAuth",
    }),
  };
}

/**
 * A client certificate naming one Portico workload identity (a URI SAN such as
 * `spiffe://portico/gateway/edge`), signed by `ca` (the PKI's own CA unless given).
 */
export function makeIdentityCert(
  pki: TestPki,
  name: string,
  identityUri: string | string[],
  opts: {
    ca?: CertFiles;
    usage?: "serverAuth" | "clientAuth" | "serverAuth,clientAuth";
    extraSan?: string;
  } = {},
): CertFiles {
  const uris = Array.isArray(identityUri) ? identityUri : [identityUri];
  const san = [...uris.map((u) => `URI:${u}`), ...(opts.extraSan ? [opts.extraSan] : [])].join(",");
  return makeLeaf(pki.dir, name, opts.ca ?? pki.ca, { cn: name, san, usage: opts.usage ?? "clientAuth" });
}

/** Removes the temp directory, keys included. */
export function removeTestPki(pki: TestPki | undefined): void {
  if (pki) fs.rmSync(pki.dir, { recursive: true, force: true });
}
