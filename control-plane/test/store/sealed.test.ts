import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { startRedis, type RedisServer } from "@portico/testing";
import type { Config } from "../../src/model/schema.js";
import { validateConfig } from "../../src/model/validate.js";
import { FileStore } from "../../src/store/file-store.js";
import { RedisStore } from "../../src/store/redis-store.js";
import type { ConfigStore } from "../../src/store/types.js";

const PEM = generateKeyPairSync("ec", { namedCurve: "P-256" })
  .privateKey.export({ type: "pkcs8", format: "pem" })
  .toString();
const PEM_BODY = PEM.split("\n")[1]!;
const HMAC_K = randomBytes(32).toString("base64url");
const KEY = randomBytes(32).toString("base64");

const config: Config = validateConfig({
  certificates: [{ name: "edge-tls", privateKeyPem: PEM }],
  jwtProviders: [
    {
      name: "internal",
      issuer: "https://issuer.example",
      audiences: ["portico"],
      algorithms: ["HS256"],
      jwks: { keys: [{ kty: "oct", kid: "k1", k: HMAC_K }] },
    },
  ],
});

function expectSealed(raw: string): void {
  expect(raw).toContain("edge-tls");
  expect(raw).toContain('"sealed":"v1.');
  expect(raw).not.toContain(PEM_BODY);
  expect(raw).not.toContain(HMAC_K);
}

/** Commits the config, checks the store hands it back whole, and closes the store. */
async function commitAndRead(store: ConfigStore): Promise<void> {
  await store.open();
  try {
    await store.commit(0, config);
    expect((await store.head())!.config).toEqual(config);
  } finally {
    await store.close();
  }
}

async function readBack(store: ConfigStore): Promise<Config | undefined> {
  await store.open();
  try {
    return (await store.head())?.config;
  } finally {
    await store.close();
  }
}

describe("secrets at rest", () => {
  it("file store: revision files hold no secret in the clear; the same key reads them back, another stops the open", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-sealed-"));
    try {
      const store = (secrets: { key?: string; keyFile?: string } = {}) =>
        new FileStore({ dir: path.join(dir, "store"), log: silentLogger(), secrets });
      await commitAndRead(store());
      const revisions = path.join(dir, "store", "revisions");
      const raw = fs
        .readdirSync(revisions)
        .map((f) => fs.readFileSync(path.join(revisions, f), "latin1"))
        .join("\n");
      expectSealed(raw);
      // Made on first start, beside the revisions, readable by its owner alone.
      const keyFile = path.join(dir, "store", "secrets.key");
      expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(await readBack(store())).toEqual(config);
      expect(await readBack(store({ keyFile }))).toEqual(config);
      await expect(readBack(store({ key: KEY }))).rejects.toMatchObject({
        code: "secrets_key_mismatch",
        message: expect.stringContaining("does not open certificates[0].privateKeyPem in revision 1"),
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  describe("Redis store", () => {
    let redis: RedisServer;
    let client: Redis;

    beforeAll(async () => {
      redis = await startRedis();
      client = new Redis(redis.url);
    });
    afterAll(async () => {
      client?.disconnect();
      await redis?.stop();
    });

    it("holds no secret in the clear in any value; the same key reads them back, another stops the open", async () => {
      const prefix = `sealed-${randomUUID()}`;
      const store = (key: string) =>
        new RedisStore({ url: redis.url, prefix, log: silentLogger(), secrets: { key } });
      await commitAndRead(store(KEY));
      const values: string[] = [];
      for (const k of await client.keys(`{${prefix}}*`)) {
        const type = await client.type(k);
        if (type === "string") values.push((await client.get(k))!);
        else if (type === "zset") values.push(...(await client.zrange(k, "0", "-1")));
        else if (type === "hash") values.push(...Object.values(await client.hgetall(k)));
        else if (type === "list") values.push(...(await client.lrange(k, "0", "-1")));
        else if (type === "set") values.push(...(await client.smembers(k)));
      }
      expectSealed(values.join("\n"));
      expect(await readBack(store(KEY))).toEqual(config);
      await expect(readBack(store(randomBytes(32).toString("hex")))).rejects.toMatchObject({
        code: "secrets_key_mismatch",
      });
    });
  });
});
