// Mints the internal CA and the workload certificates: ECDSA P-256 keys from node:crypto, X.509 v3
// certificates encoded by der.ts and signed with the CA's key.
import { isIPv4, isIPv6 } from "node:net";
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  type KeyObject,
} from "node:crypto";
import {
  bitString,
  boolean,
  explicit,
  implicit,
  integer,
  namedBits,
  octetString,
  oid,
  readTlv,
  sequence,
  sequenceItems,
  set,
  time,
  utf8String,
} from "./der.js";

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  organization: "2.5.4.10",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};
const KEY_USAGE = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 };

/** A certificate and its private key, both PEM. */
export interface KeyPairPem {
  cert: string;
  key: string;
}

export interface LeafNames {
  /** Exactly one: the workload's identity (`spiffe://portico/…`). */
  uri: string;
  /** Host names peers dial it by, which TLS clients check. */
  dns: string[];
  /** Addresses peers dial it by. */
  ip: string[];
}

const DAY_MS = 86_400_000;
/** Certificates start a little in the past, so a peer whose clock is behind accepts them. */
const BACKDATE_MS = 5 * 60_000;

function name(commonName: string): Buffer {
  const rdn = (type: string, value: string) => set(sequence(oid(type), utf8String(value)));
  return sequence(rdn(OID.organization, "Portico"), rdn(OID.commonName, commonName));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return sequence(oid(id), ...(critical ? [boolean(true)] : []), octetString(value));
}

/** RFC 5280 §4.2.1.2 method 1: the SHA-1 of the subjectPublicKey bits. */
function keyIdentifier(spki: Buffer): Buffer {
  const [, bits] = sequenceItems(spki);
  const { content } = readTlv(bits!, 0);
  return createHash("sha1").update(content.subarray(1)).digest();
}

interface CertificateSpec {
  subject: Buffer;
  issuer: Buffer;
  publicKey: KeyObject;
  signingKey: KeyObject;
  /** The issuer's public key, for the authority key identifier. */
  issuerPublicKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  extensions: Buffer[];
}

function certificate(s: CertificateSpec): string {
  const spki = s.publicKey.export({ type: "spki", format: "der" });
  const issuerSpki = s.issuerPublicKey.export({ type: "spki", format: "der" });
  const algorithm = sequence(oid(OID.ecdsaWithSha256));
  // Positive, 128 random bits: serials must be unique per CA and unpredictable.
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const tbs = sequence(
    explicit(0, integer(2)),
    integer(serial),
    algorithm,
    s.issuer,
    sequence(time(s.notBefore), time(s.notAfter)),
    s.subject,
    spki,
    explicit(
      3,
      sequence(
        ...s.extensions,
        extension(OID.subjectKeyIdentifier, false, octetString(keyIdentifier(spki))),
        extension(OID.authorityKeyIdentifier, false, sequence(implicit(0, keyIdentifier(issuerSpki)))),
      ),
    ),
  );
  const signature = sign("sha256", tbs, s.signingKey);
  const der = sequence(tbs, algorithm, bitString(signature));
  return pem("CERTIFICATE", der);
}

/** The subject Name of a PEM certificate, as DER: a certificate it signs names it byte for byte. */
function subjectOf(certPem: string): Buffer {
  const der = Buffer.from(certPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
  const [tbs] = sequenceItems(der);
  // version, serialNumber, signature, issuer, validity, subject
  return sequenceItems(tbs!)[5]!;
}

function pem(label: string, der: Buffer): string {
  const lines = der.toString("base64").match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

export function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split(".").map(Number));
  if (!isIPv6(address)) throw new Error(`'${address}' is not an IP address`);
  // Expand `::` to the zero groups it stands for, then 8 groups of 16 bits.
  const [head, tail] = address.includes("::") ? address.split("::") : [address, undefined];
  const groups = (text: string | undefined) => (text ? text.split(":") : []);
  const h = groups(head);
  const t = groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  return Buffer.from(all.flatMap((g) => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]));
}

function newKey(): { privateKey: KeyObject; publicKey: KeyObject; pem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { privateKey, publicKey, pem: privateKey.export({ type: "pkcs8", format: "pem" }).toString() };
}

export const CA_COMMON_NAME = "Portico internal CA";

/** A new self-signed CA that may sign workload certificates only (path length 0). */
export function issueCa(now: Date, days: number): KeyPairPem {
  const key = newKey();
  const cert = certificate({
    subject: name(CA_COMMON_NAME),
    issuer: name(CA_COMMON_NAME),
    publicKey: key.publicKey,
    signingKey: key.privateKey,
    issuerPublicKey: key.publicKey,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    extensions: [
      extension(OID.basicConstraints, true, sequence(boolean(true), integer(0))),
      extension(OID.keyUsage, true, namedBits([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign])),
    ],
  });
  return { cert, key: key.pem };
}

/**
 * A workload's certificate: one URI SAN naming it, DNS SANs for the names peers dial it by, usable
 * by a TLS server and a TLS client alike (every workload is both, towards different peers).
 */
export function issueLeaf(
  ca: KeyPairPem,
  commonName: string,
  names: LeafNames,
  now: Date,
  days: number,
): KeyPairPem {
  const caKey = createPrivateKey(ca.key);
  const key = newKey();
  const san = sequence(
    implicit(6, Buffer.from(names.uri, "ascii")),
    ...names.dns.map((d) => implicit(2, Buffer.from(d, "ascii"))),
    ...names.ip.map((a) => implicit(7, ipBytes(a))),
  );
  const cert = certificate({
    subject: name(commonName),
    issuer: subjectOf(ca.cert),
    publicKey: key.publicKey,
    signingKey: caKey,
    issuerPublicKey: createPublicKey(caKey),
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + days * DAY_MS),
    extensions: [
      extension(OID.basicConstraints, true, sequence()),
      extension(OID.keyUsage, true, namedBits([KEY_USAGE.digitalSignature])),
      extension(OID.extKeyUsage, false, sequence(oid(OID.serverAuth), oid(OID.clientAuth))),
      extension(OID.subjectAltName, false, san),
    ],
  });
  return { cert, key: key.pem };
}
