import { generateKeyPairSync, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import {
  freePort,
  READ_TOKEN,
  runControlPlaneUntil,
  startAdmin,
  testTokens,
  type AdminHandle,
} from "@portico/testing";
import { startControlPlane } from "../src/control-plane.js";

const PEM = generateKeyPairSync("ec", { namedCurve: "P-256" })
  .privateKey.export({ type: "pkcs8", format: "pem" })
  .toString();
/** The PEM's base64 body, as any copy of the key on disk would hold it. */
const PEM_BODY = PEM.split("\n")[1]!;
const HMAC_K = randomBytes(32).toString("base64url");

const certificate = { name: "edge-tls", privateKeyPem: PEM };
const jwtProvider = {
  name: "internal",
  issuer: "https://issuer.example",
  audiences: ["portico"],
  algorithms: ["HS256"],
  jwks: { keys: [{ kty: "oct", kid: "k1", k: HMAC_K }] },
};
/** Every plaintext secret this suite writes. */
const SECRETS = [PEM_BODY, HMAC_K];

function expectNoSecret(text: string): void {
  for (const s of SECRETS) expect(text).not.toContain(s);
}

/** Every byte of every file under a directory, as one string. */
function rawBytes(dir: string): string {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => fs.readFileSync(path.join(e.parentPath, e.name), "latin1"))
    .join("\n");
}

describe("secrets are write-only and sealed at rest", () => {
  let api: AdminHandle;

  beforeAll(async () => {
    api = await startAdmin();
    expect((await api.call("PUT", "/api/v1/certificates/edge-tls", { body: certificate })).status).toBe(201);
    const jwt = await api.call("PUT", "/api/v1/jwtProviders/internal", { body: jwtProvider });
    expect(jwt.status, jwt.text).toBe(201);
  });
  afterAll(async () => {
    await api?.stop();
  });

  it("never shows a read token a secret: resources, lists, the export and revisions show fingerprints", async () => {
    const reads = [
      "/api/v1/certificates/edge-tls",
      "/api/v1/certificates",
      "/api/v1/jwtProviders/internal",
      "/api/v1/jwtProviders",
      "/api/v1/config",
      "/api/v1/revisions/1",
      "/api/v1/revisions/2",
      "/api/v1/revisions",
    ];
    for (const p of reads) {
      for (const accept of ["application/json", "application/yaml"]) {
        const res = await api.call("GET", p, { token: READ_TOKEN, headers: { accept } });
        expect(res.status, p).toBe(200);
        expectNoSecret(res.text);
      }
    }
    const cert = (await api.call("GET", "/api/v1/certificates/edge-tls", { token: READ_TOKEN })).json;
    expect(cert.privateKeyPem).toEqual({
      redacted: true,
      sha256: expect.stringMatching(/^sha256:[0-9a-f]{16}$/),
      createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
    });
    const jwt = (await api.call("GET", "/api/v1/jwtProviders/internal", { token: READ_TOKEN })).json;
    expect(jwt.jwks.keys[0]).toMatchObject({ kty: "oct", kid: "k1", k: { redacted: true } });
  });

  it("keeps the stored secret when a resource read back is written back, and the export re-applies unchanged", async () => {
    const read = await api.call("GET", "/api/v1/certificates/edge-tls");
    const put = await api.call("PUT", "/api/v1/certificates/edge-tls", {
      body: read.json,
      headers: { "if-match": read.headers.get("etag")! },
    });
    expect(put.status, put.text).toBe(200);
    expect(put.headers.get("etag")).toBe(read.headers.get("etag"));
    expect((await api.cp.store.head())!.config.certificates[0]!.privateKeyPem).toBe(PEM);

    const exported = await api.call("GET", "/api/v1/config", { headers: { accept: "application/yaml" } });
    const applied = await api.call("PUT", "/api/v1/config", {
      raw: exported.text,
      contentType: "application/yaml",
    });
    expect(applied.status, applied.text).toBe(200);
    expect(applied.json.changed).toBe(false);
    const head = (await api.cp.store.head())!.config;
    expect(head.jwtProviders[0]!.jwks!.keys[0]!.k).toBe(HMAC_K);
  });

  it("refuses a redacted secret it does not hold, naming the field", async () => {
    const body = { name: "other", privateKeyPem: { redacted: true, sha256: "sha256:0000000000000000" } };
    const res = await api.call("PUT", "/api/v1/certificates/other", { body });
    expect(res.status).toBe(422);
    expect(res.json.details).toEqual([
      {
        field: "privateKeyPem",
        reason: "no stored secret has the fingerprint sha256:0000000000000000; give the secret itself",
      },
    ]);
  });

  it("holds no secret in the clear on disk, reads them back with the same key, and stops on a wrong key", async () => {
    const storeDir = path.join(api.dir, "store");
    const raw = rawBytes(storeDir);
    expect(raw).toContain("edge-tls");
    expectNoSecret(raw);
    const keyFile = path.join(storeDir, "secrets.key");
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    await api.stop();

    const again = await startControlPlane({
      store: `file:${storeDir}`,
      xdsPort: 0,
      adminPort: 0,
      tokens: testTokens(),
      log: silentLogger(),
    });
    try {
      const head = (await again.store.head())!.config;
      expect(head.certificates[0]!.privateKeyPem).toBe(PEM);
      expect(head.jwtProviders[0]!.jwks!.keys[0]!.k).toBe(HMAC_K);
    } finally {
      await again.stop();
    }

    const wrong = path.join(api.dir, "wrong.key");
    fs.writeFileSync(wrong, randomBytes(32).toString("base64"), { mode: 0o600 });
    process.env.PORTICO_SECRETS_KEY_FILE = wrong;
    try {
      await expect(
        startControlPlane({
          store: `file:${storeDir}`,
          xdsPort: 0,
          adminPort: 0,
          tokens: testTokens(),
          log: silentLogger(),
        }),
      ).rejects.toThrow(/the secrets key \(file .*wrong\.key\) does not open .* in revision \d+/);
    } finally {
      delete process.env.PORTICO_SECRETS_KEY_FILE;
    }
  });
});

describe("the control plane process", () => {
  it("shows a new admin token once on the terminal, never in the log; a wrong secrets key stops the start", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-main-"));
    try {
      const args = [
        ...["--store", `file:${path.join(dir, "store")}`, "--tokens-file", path.join(dir, "tokens.json")],
        ...["--admin-port", String(await freePort()), "--xds-port", String(await freePort())],
      ];
      const first = await runControlPlaneUntil(args, {}, (o) => o.stdout.includes("admin API listening"));
      const token = /^ {2}(\S+)$/m.exec(first.stderr)?.[1];
      expect(token, first.stderr).toBeDefined();
      expect(first.stderr).toContain("it will not be shown again");
      expect(first.stdout).toContain("created an admin token");
      expect(first.stdout).not.toContain(token!);

      // A secret in the store, then a start with another key.
      const store = await startControlPlane({
        store: `file:${path.join(dir, "store")}`,
        xdsPort: 0,
        adminPort: 0,
        tokens: testTokens(),
        log: silentLogger(),
      });
      await store.service.write((c) => void c.certificates.push({ name: "tls", privateKeyPem: PEM }));
      await store.stop();
      const wrong = await runControlPlaneUntil(
        args,
        { PORTICO_SECRETS_KEY: randomBytes(32).toString("hex") },
        () => false,
      );
      expect(wrong.code).toBe(1);
      expect(wrong.stdout).toContain("the secrets key (PORTICO_SECRETS_KEY) does not open");
      expect(wrong.stdout + wrong.stderr).not.toContain(PEM_BODY);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
