import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { RequestHandler } from "express";
import { HttpError } from "./http-error.js";

export type Role = "admin" | "read";

export interface TokenRecord {
  name: string;
  role: Role;
  /** SHA-256 of the token, hex: the plaintext is never stored. */
  sha256: string;
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function generateToken(): string {
  return `pt_${randomBytes(24).toString("base64url")}`;
}

/** Bearer tokens for the admin API, kept hashed, each with a role. */
export class TokenRegistry {
  private readonly byHash = new Map<string, TokenRecord>();

  constructor(records: TokenRecord[] = []) {
    for (const r of records) this.byHash.set(r.sha256, r);
  }

  add(record: TokenRecord): void {
    this.byHash.set(record.sha256, record);
  }

  size(): number {
    return this.byHash.size;
  }

  records(): TokenRecord[] {
    return [...this.byHash.values()];
  }

  /** Constant-time comparison of the hashes, so response timing does not leak a prefix. */
  lookup(token: string): TokenRecord | undefined {
    const h = Buffer.from(hashToken(token), "hex");
    for (const [hash, record] of this.byHash) {
      if (timingSafeEqual(Buffer.from(hash, "hex"), h)) return record;
    }
    return undefined;
  }

  /**
   * Loads the tokens file; when there is none, creates it with one new admin token and returns that
   * token's plaintext so it can be shown once.
   */
  static loadOrCreate(file: string): { registry: TokenRegistry; created?: string } {
    if (fs.existsSync(file)) {
      const records = JSON.parse(fs.readFileSync(file, "utf8")) as TokenRecord[];
      return { registry: new TokenRegistry(records) };
    }
    const token = generateToken();
    const registry = new TokenRegistry([{ name: "admin", role: "admin", sha256: hashToken(token) }]);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify(registry.records(), null, 2) + "\n", { mode: 0o600 });
    return { registry, created: token };
  }
}

/** Reads need any valid token; writes need an admin token. */
export function requireToken(registry: TokenRegistry): RequestHandler {
  return (req, _res, next) => {
    const header = req.headers.authorization ?? "";
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match)
      return next(
        new HttpError(401, "unauthenticated", "send an admin token: Authorization: Bearer <token>"),
      );
    const record = registry.lookup(match[1]!);
    if (!record) return next(new HttpError(401, "unauthenticated", "the token is not valid"));
    const write = !["GET", "HEAD", "OPTIONS"].includes(req.method);
    if (write && record.role !== "admin") {
      return next(new HttpError(403, "forbidden", `the token '${record.name}' is read-only`));
    }
    (req as { principal?: string }).principal = record.name;
    next();
  };
}
