/**
 * Secrets at rest: each secret of a stored config (private keys, HMAC keys, client secrets, parts
 * tokens) is sealed with AES-256-GCM under the store's secrets key, so revision files and Redis
 * values hold none in the clear. The rest of the config stays readable.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { mkdir, readFile, unlink, writeFile, link, chmod } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@portico/common";
import { fingerprint, mapSecrets } from "../model/secrets.js";
import type { Config } from "../model/schema.js";

/** A secret as it is stored. */
interface SealedSecret {
  /** `v1.<iv>.<ciphertext>.<tag>`, each base64url. */
  sealed: string;
  sha256: string;
  createdAt: string;
}

const VERSION = "v1";
/** Binds every ciphertext to its purpose: a sealed value cannot pass for anything else. */
const AAD = Buffer.from("portico secret v1");

function isSealed(value: unknown): value is SealedSecret {
  return (
    typeof value === "object" && value !== null && typeof (value as { sealed?: unknown }).sealed === "string"
  );
}

/** The stored secrets do not open with this key: the store was sealed with another. */
export class SecretsKeyError extends Error {
  readonly code = "secrets_key_mismatch";

  constructor(where: string, field: string, keySource: string) {
    super(
      `the secrets key (${keySource}) does not open ${field} in ${where}: start with the key the ` +
        `store was sealed with (PORTICO_SECRETS_KEY or PORTICO_SECRETS_KEY_FILE)`,
    );
    this.name = "SecretsKeyError";
  }
}

export class SecretSealer {
  /** When the store first held each secret, by fingerprint. */
  private readonly created = new Map<string, string>();

  constructor(
    private readonly key: Buffer,
    /** Where the key came from, for error messages (never the key). */
    readonly keySource: string,
  ) {
    if (key.length !== 32)
      throw new Error(`the secrets key (${keySource}) must be 32 bytes, not ${key.length}`);
  }

  createdAt(fp: string): string | undefined {
    return this.created.get(fp);
  }

  /** The config as stored: every secret sealed. */
  seal(config: Config, now = new Date().toISOString()): Config {
    return mapSecrets(config, (value) => {
      if (typeof value !== "string") return value;
      const sha256 = fingerprint(value);
      const createdAt = this.created.get(sha256) ?? now;
      this.created.set(sha256, createdAt);
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", this.key, iv).setAAD(AAD);
      const data = Buffer.concat([cipher.update(value, "utf8"), cipher.final()]);
      const sealed = [VERSION, iv, data, cipher.getAuthTag()]
        .map((p) => (typeof p === "string" ? p : p.toString("base64url")))
        .join(".");
      return { sealed, sha256, createdAt } satisfies SealedSecret;
    });
  }

  /** A stored config with its secrets opened; secrets stored before sealing existed pass as they are. */
  unseal(config: Config, where: string): Config {
    return mapSecrets(config, (value, field) => {
      if (!isSealed(value)) return value;
      const [version, iv, data, tag] = value.sealed.split(".");
      let plain: string;
      try {
        if (version !== VERSION || !iv || data === undefined || !tag) throw new Error("not a sealed value");
        const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(iv, "base64url"))
          .setAAD(AAD)
          .setAuthTag(Buffer.from(tag, "base64url"));
        plain = Buffer.concat([decipher.update(Buffer.from(data, "base64url")), decipher.final()]).toString(
          "utf8",
        );
      } catch {
        throw new SecretsKeyError(where, field, this.keySource);
      }
      if (!this.created.has(value.sha256)) this.created.set(value.sha256, value.createdAt);
      return plain;
    });
  }
}

export interface SecretsKeyOptions {
  /** The key itself: 32 bytes, base64 or hex (`PORTICO_SECRETS_KEY`). */
  key?: string;
  /** A file holding the key, made (0600) when it does not exist (`PORTICO_SECRETS_KEY_FILE`). */
  keyFile?: string;
}

function parseKey(text: string, source: string): Buffer {
  const t = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, "hex") : Buffer.from(t, "base64");
  if (key.length !== 32)
    throw new Error(
      `the secrets key (${source}) must be 32 bytes as 64 hex digits or base64, got ${key.length} bytes`,
    );
  return key;
}

/** Reads the key file, or makes it when there is none; two processes making it at once agree on one. */
async function keyFromFile(file: string, log: Logger): Promise<Buffer> {
  try {
    return parseKey(await readFile(file, "utf8"), file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, `${randomBytes(32).toString("base64")}\n`, { mode: 0o600 });
  await chmod(tmp, 0o600);
  try {
    // A link fails when the file exists: whoever links first made the key everyone reads.
    await link(tmp, file);
    log.warn(
      { keyFile: file },
      "made a new secrets key: the store's secrets are sealed with it; back it up, and give every replica the same one",
    );
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  return parseKey(await readFile(file, "utf8"), file);
}

/**
 * The store's sealer: from the key given (or `PORTICO_SECRETS_KEY`), else the key file given (or
 * `PORTICO_SECRETS_KEY_FILE`, or `defaultFile`), made when absent.
 */
export async function openSealer(
  opts: SecretsKeyOptions,
  defaultFile: string,
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Promise<SecretSealer> {
  const key = opts.key ?? env.PORTICO_SECRETS_KEY;
  if (key !== undefined && key !== "")
    return new SecretSealer(parseKey(key, "PORTICO_SECRETS_KEY"), "PORTICO_SECRETS_KEY");
  const file = path.resolve(opts.keyFile ?? (env.PORTICO_SECRETS_KEY_FILE || defaultFile));
  return new SecretSealer(await keyFromFile(file, log), `file ${file}`);
}
