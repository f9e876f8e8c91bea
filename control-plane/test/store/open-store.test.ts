import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "@portico/common";
import { createStore, DEFAULT_STORE_DIR, FileStore, openStore, RedisStore } from "../../src/store/index.js";
import { sampleConfig } from "./fixtures.js";
import { startRedis, type RedisServer } from "@portico/testing";

let redis: RedisServer;
let tmp: string;

beforeAll(async () => {
  redis = await startRedis();
  tmp = mkdtempSync(path.join(os.tmpdir(), "portico-open-store-"));
});

afterAll(async () => {
  await redis?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe("openStore", () => {
  it("defaults to a file store under the working directory", () => {
    const store = createStore("", silentLogger());
    expect(store).toBeInstanceOf(FileStore);
    expect((store as FileStore).dir).toBe(path.resolve(DEFAULT_STORE_DIR));
    expect((createStore("file:", silentLogger()) as FileStore).dir).toBe(path.resolve(DEFAULT_STORE_DIR));
  });

  it("opens a file store from file:<dir> and file:// URLs", async () => {
    const dir = path.join(tmp, "a");
    const store = await openStore(`file:${dir}`, silentLogger());
    expect(store.kind).toBe("file");
    await store.commit(0, sampleConfig(1));
    await store.close();
    expect(existsSync(path.join(dir, "revisions", "000000000001.json"))).toBe(true);

    const again = await openStore(pathToFileURL(dir).href, silentLogger());
    expect((await again.head())!.number).toBe(1);
    await again.close();
  });

  it("opens a Redis store, taking prefix and keep from the URL", async () => {
    const prefix = `url-${randomUUID()}`;
    const store = await openStore(`${redis.url}/0?prefix=${prefix}&keep=2`, silentLogger());
    try {
      expect(store).toBeInstanceOf(RedisStore);
      expect(store.kind).toBe("redis");
      for (let n = 1; n <= 3; n++) await store.commit(n - 1, sampleConfig(n));
      expect((await store.list()).map((s) => s.number)).toEqual([3, 2]);
    } finally {
      await store.close();
    }
    const raw = new Redis(redis.url);
    try {
      expect(await raw.get(`{${prefix}}:head`)).toBe("3");
    } finally {
      raw.disconnect();
    }
  });

  it("rejects what it does not understand", async () => {
    await expect(openStore("etcd://somewhere", silentLogger())).rejects.toThrow(
      /unknown store 'etcd:\/\/somewhere'/,
    );
    await expect(openStore("redis://h?keep=many", silentLogger())).rejects.toThrow(
      /keep must be a whole number/,
    );
    await expect(openStore("redis://h?prefix={x}", silentLogger())).rejects.toThrow(/without braces/);
  });

  it("takes Redis Cluster seed nodes from redis+cluster:// and rediss+cluster:// URLs", () => {
    const store = createStore("rediss+cluster://:pw@[::1]:7000,redis-1?prefix=edge&keep=5", silentLogger());
    expect(store).toBeInstanceOf(RedisStore);
    expect((store as RedisStore).prefix).toBe("edge");

    const bad = (spec: string) => () => createStore(spec, silentLogger());
    expect(bad("redis+cluster://")).toThrow(/not a valid Redis Cluster URL/);
    expect(bad("redis+cluster://h:1,h:99999")).toThrow(/'h:99999' .* is not host:port/);
    expect(bad("redis+cluster://h:1,::1:2")).toThrow(/'::1:2' .* is not host:port/);
    expect(bad("redis+cluster://h:1?keep=all")).toThrow(/keep must be a whole number/);
    expect(bad("redis+cluster://h:1?prefix={x}")).toThrow(/without braces/);
    // ioredis reads nothing from this URL, so an option meant for it must not be dropped silently.
    expect(bad("redis+cluster://h:1?db=2")).toThrow(/unknown option 'db'/);
    expect(bad("redis+cluster://:hunter2@h:1?db=2")).toThrow(
      "'redis+cluster://***@h:1?db=2': unknown option",
    );
  });
});
