// Brings a store of PKI material up to a plan, keeping what is still good: run at every start, it
// changes nothing on a healthy deployment, renews what is close to expiry, and reissues what no
// longer matches (another CA, other names, a key that is not the certificate's).
import { createHash, createPrivateKey, randomBytes, X509Certificate } from "node:crypto";
import { identityUri } from "@portico/common";
import { ipBytes, issueCa, issueLeaf, type KeyPairPem } from "./certificates.js";
import {
  CA_DIR,
  CA_FILES,
  FILES,
  REDIS_DIR,
  REDIS_FILES,
  type Owner,
  type PkiPlan,
  type RedisPlan,
  type WorkloadPlan,
} from "./plan.js";

export interface StoredFile {
  name: string;
  text: string;
  /** Readable by its owner only: keys and passwords. */
  secret: boolean;
}

/** Where the material lives: a directory per workload, or a Kubernetes Secret per workload. */
export interface PkiStore {
  /** For the log: a path, or a Secret's name. */
  where(dir: string): string;
  /** The files a directory holds, by name; empty when it does not exist. */
  read(dir: string): Promise<Map<string, string>>;
  /** Writes the files whose content differs and gives every one of them its owner and mode. */
  write(dir: string, files: StoredFile[], owner?: Owner): Promise<void>;
}

export interface PkiChange {
  dir: string;
  where: string;
  action: "created" | "kept" | "renewed";
  /** Why it was made anew. */
  why?: string;
}

/** What to make anew whatever its state: directory names, `ca` (and so every certificate), `redis` or `all`. */
export type RenewSet = ReadonlySet<string>;

const day = (d: Date) => d.toISOString().slice(0, 10);

function parseCert(pem: string | undefined): X509Certificate | undefined {
  if (!pem) return undefined;
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function keyMatches(cert: X509Certificate, keyPem: string | undefined): boolean {
  if (!keyPem) return false;
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

/** Past two thirds of its life: renewed now, while every peer still accepts the old one. */
function nearExpiry(cert: X509Certificate, now: Date): boolean {
  const from = new Date(cert.validFrom).getTime();
  const to = new Date(cert.validTo).getTime();
  return to - now.getTime() < (to - from) / 3;
}

function caProblem(files: Map<string, string>, now: Date): string | undefined {
  const cert = parseCert(files.get(CA_FILES.cert));
  if (!cert) return files.has(CA_FILES.cert) ? "the CA certificate is unreadable" : "no CA yet";
  if (!cert.ca) return "the CA certificate is not a CA";
  if (!keyMatches(cert, files.get(CA_FILES.key))) return "the CA key is missing or not the certificate's";
  if (nearExpiry(cert, now)) return `the CA expires on ${day(new Date(cert.validTo))}`;
  return undefined;
}

/** An IP SAN as one text whichever way the address was written (node:crypto prints IPv6 in full). */
function ipSan(address: string): string {
  const bytes = ipBytes(address);
  if (bytes.length === 4) return `IP Address:${address}`;
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return `IP Address:${groups.join(":")}`;
}

function sans(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? "")
    .split(/,\s*/)
    .filter(Boolean)
    .map((s) => (s.startsWith("IP Address:") ? ipSan(s.slice("IP Address:".length)) : s))
    .sort();
}

function expectedSans(w: WorkloadPlan): string[] {
  return [`URI:${identityUri(w.identity)}`, ...w.dns.map((d) => `DNS:${d}`), ...w.ip.map(ipSan)].sort();
}

function leafProblem(
  files: Map<string, string>,
  ca: KeyPairPem,
  w: WorkloadPlan,
  now: Date,
): string | undefined {
  const cert = parseCert(files.get(FILES.cert));
  if (!cert) return files.has(FILES.cert) ? "its certificate is unreadable" : "no certificate yet";
  if (!keyMatches(cert, files.get(FILES.key))) return "its key is missing or not the certificate's";
  if (files.get(FILES.ca) !== ca.cert || !cert.verify(new X509Certificate(ca.cert).publicKey))
    return "the CA changed";
  const had = sans(cert);
  const wanted = expectedSans(w);
  if (had.join() !== wanted.join()) return `its names changed (${had.join(", ")} → ${wanted.join(", ")})`;
  if (nearExpiry(cert, now)) return `it expires on ${day(new Date(cert.validTo))}`;
  return undefined;
}

const PASSWORD = /^[A-Za-z0-9_-]{32,}$/;

/**
 * The Redis ACL file: the `default` user off, and one user for Portico's services, with its
 * password as a SHA-256 (the file holds no password). Everything the services run, without the
 * commands that can wipe or reconfigure the server; INFO (the client's ready check) and CONFIG GET
 * (the store's persistence check) stay allowed.
 */
export function redisAcl(username: string, password: string): string {
  const hash = createHash("sha256").update(password).digest("hex");
  // Redis's ACL file takes `user` lines only, no comments. `resetpass` drops the default user's
  // `nopass`, so nothing about it says "open" to protected mode or to a later `on`.
  return (
    "user default off resetpass -@all\n" +
    `user ${username} on #${hash} ~* &* +@all -@dangerous +info +config|get\n`
  );
}

function checkUsername(name: string): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name))
    throw new Error(`Redis user '${name}' must be letters, digits, . _ -`);
  return name;
}

export interface EnsureOptions {
  now?: Date;
  renew?: RenewSet;
}

/** Brings `store` up to `plan`; says what it did with each directory (never a key or password). */
export async function ensurePki(
  plan: PkiPlan,
  store: PkiStore,
  opts: EnsureOptions = {},
): Promise<PkiChange[]> {
  const now = opts.now ?? new Date();
  const renew = opts.renew ?? new Set<string>();
  const forced = (dir: string) => renew.has("all") || renew.has(dir);
  const changes: PkiChange[] = [];
  const note = (dir: string, action: PkiChange["action"], why?: string) =>
    changes.push({ dir, where: store.where(dir), action, ...(why ? { why } : {}) });

  const caFiles = await store.read(CA_DIR);
  let ca: KeyPairPem;
  const caWhy = forced(CA_DIR) ? "renewal asked for" : caProblem(caFiles, now);
  if (caWhy !== undefined) {
    ca = issueCa(now, plan.caDays);
    await store.write(CA_DIR, [
      { name: CA_FILES.cert, text: ca.cert, secret: false },
      { name: CA_FILES.key, text: ca.key, secret: true },
    ]);
    note(CA_DIR, caFiles.has(CA_FILES.cert) ? "renewed" : "created", caWhy);
  } else {
    ca = { cert: caFiles.get(CA_FILES.cert)!, key: caFiles.get(CA_FILES.key)! };
    note(CA_DIR, "kept");
  }

  const password = plan.redis ? await ensureRedis(plan.redis, store, forced(REDIS_DIR), note) : undefined;

  for (const w of plan.workloads) {
    const files = await store.read(w.dir);
    const why = forced(w.dir) ? "renewal asked for" : leafProblem(files, ca, w, now);
    let leaf: KeyPairPem;
    if (why !== undefined) {
      leaf = issueLeaf(ca, w.dir, { uri: identityUri(w.identity), dns: w.dns, ip: w.ip }, now, plan.leafDays);
      note(w.dir, files.has(FILES.cert) ? "renewed" : "created", why);
    } else {
      leaf = { cert: files.get(FILES.cert)!, key: files.get(FILES.key)! };
    }
    const out: StoredFile[] = [
      { name: FILES.cert, text: leaf.cert, secret: false },
      { name: FILES.key, text: leaf.key, secret: true },
      { name: FILES.ca, text: ca.cert, secret: false },
    ];
    if (w.redisClient && password !== undefined)
      out.push({ name: FILES.redisPassword, text: `${password}\n`, secret: true });
    const passwordChanged = out.some((f) => f.name === FILES.redisPassword && files.get(f.name) !== f.text);
    await store.write(w.dir, out, w.owner);
    if (why === undefined)
      note(
        w.dir,
        passwordChanged ? "renewed" : "kept",
        passwordChanged ? "the Redis password changed" : undefined,
      );
  }
  return changes;
}

async function ensureRedis(
  redis: RedisPlan,
  store: PkiStore,
  forced: boolean,
  note: (dir: string, action: PkiChange["action"], why?: string) => void,
): Promise<string> {
  const username = checkUsername(redis.username);
  const files = await store.read(REDIS_DIR);
  const had = files.get(REDIS_FILES.password)?.replace(/\n$/, "");
  const keep = !forced && had !== undefined && PASSWORD.test(had);
  // 256 random bits, in characters that need no quoting anywhere.
  const password = keep ? had : randomBytes(32).toString("base64url");
  const acl = redisAcl(username, password);
  await store.write(
    REDIS_DIR,
    [
      { name: REDIS_FILES.password, text: `${password}\n`, secret: true },
      { name: REDIS_FILES.acl, text: acl, secret: true },
    ],
    redis.owner,
  );
  if (!keep)
    note(
      REDIS_DIR,
      had === undefined ? "created" : "renewed",
      forced ? "renewal asked for" : had === undefined ? undefined : "the password was not usable",
    );
  else
    note(
      REDIS_DIR,
      files.get(REDIS_FILES.acl) === acl ? "kept" : "renewed",
      files.get(REDIS_FILES.acl) === acl ? undefined : "the ACL changed",
    );
  return password;
}
