import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { silentLogger } from "@portico/common";
import {
  hashToken,
  TokenRegistry,
  startControlPlane,
  type ControlPlane,
  type ControlPlaneOptions,
} from "@portico/control-plane";

export const ADMIN_TOKEN = "test-admin-token";
export const READ_TOKEN = "test-read-token";

export interface AdminHandle {
  cp: ControlPlane;
  url: string;
  dir: string;
  /** fetch against the admin API with the admin token (or `token: null` for none). */
  call(
    method: string,
    p: string,
    opts?: {
      body?: unknown;
      raw?: string;
      contentType?: string;
      token?: string | null;
      headers?: Record<string, string>;
    },
  ): Promise<{ status: number; headers: Headers; text: string; json: any }>;
  stop(): Promise<void>;
}

export function testTokens(): TokenRegistry {
  return new TokenRegistry([
    { name: "ci", role: "admin", sha256: hashToken(ADMIN_TOKEN) },
    { name: "viewer", role: "read", sha256: hashToken(READ_TOKEN) },
  ]);
}

/** A control plane with a file store in a temp dir and known tokens, on free ports. */
export async function startAdmin(opts: Partial<ControlPlaneOptions> = {}): Promise<AdminHandle> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-admin-"));
  const cp = await startControlPlane({
    store: `file:${path.join(dir, "store")}`,
    xdsPort: 0,
    adminPort: 0,
    tokens: testTokens(),
    log: silentLogger(),
    ...opts,
  });
  const url = `http://127.0.0.1:${cp.adminPort}`;
  return {
    cp,
    url,
    dir,
    async call(method, p, o = {}) {
      const token = o.token === undefined ? ADMIN_TOKEN : o.token;
      const body = o.raw ?? (o.body !== undefined ? JSON.stringify(o.body) : undefined);
      const res = await fetch(url + p, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { "content-type": o.contentType ?? "application/json" } : {}),
          ...o.headers,
        },
        body,
      });
      const text = await res.text();
      let json: any;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.status, headers: res.headers, text, json };
    },
    async stop() {
      await cp.stop();
    },
  };
}
