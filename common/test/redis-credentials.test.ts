import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { redisCredentialsFromEnv, withRedisCredentials } from "../src/redis-credentials.js";

const file = (text: string) => {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "portico-redis-cred-")), "password");
  fs.writeFileSync(f, text);
  return f;
};

describe("Redis credentials from the environment", () => {
  it("reads the user and the password file, without the file's trailing newline", () => {
    const env = { PORTICO_REDIS_USERNAME: "portico", PORTICO_REDIS_PASSWORD_FILE: file("s3cret-pass\n") };
    expect(redisCredentialsFromEnv(env)).toEqual({ username: "portico", password: "s3cret-pass" });
    expect(redisCredentialsFromEnv({})).toEqual({});
  });

  it("says which variable is wrong, and never shows the password", () => {
    expect(() => redisCredentialsFromEnv({ PORTICO_REDIS_USERNAME: "portico" })).toThrow(
      /PORTICO_REDIS_PASSWORD_FILE is not/,
    );
    expect(() => redisCredentialsFromEnv({ PORTICO_REDIS_PASSWORD_FILE: "/nonexistent/pw" })).toThrow(
      "PORTICO_REDIS_PASSWORD_FILE /nonexistent/pw: cannot read it (ENOENT)",
    );
    expect(() => redisCredentialsFromEnv({ PORTICO_REDIS_PASSWORD_FILE: file("\n") })).toThrow(/is empty/);
    const twoLines = file("first-secret\nsecond-secret\n");
    expect(() => redisCredentialsFromEnv({ PORTICO_REDIS_PASSWORD_FILE: twoLines })).toThrow(
      `PORTICO_REDIS_PASSWORD_FILE ${twoLines} holds more than one line`,
    );
  });

  it("fill in connection options that name no password; a URL's own credentials win", () => {
    const creds = { username: "portico", password: "pw" };
    expect(
      withRedisCredentials(
        { host: "redis" } as { host: string; username?: string; password?: string },
        creds,
      ),
    ).toEqual({
      host: "redis",
      username: "portico",
      password: "pw",
    });
    expect(withRedisCredentials({ username: "other", password: "own" }, creds)).toEqual({
      username: "other",
      password: "own",
    });
    expect(withRedisCredentials({ username: "other" }, creds)).toEqual({ username: "other", password: "pw" });
    expect(withRedisCredentials({}, {})).toEqual({});
  });
});
