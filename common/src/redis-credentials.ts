import { readFileSync } from "node:fs";

/**
 * The Redis ACL user and password a service logs in with, from its environment:
 * `PORTICO_REDIS_USERNAME` and `PORTICO_REDIS_PASSWORD_FILE` (a file holding the password, so it
 * never shows in a process listing or a container's inspect output). They apply to every Redis URL
 * the service is given; a URL that carries its own credentials keeps them.
 */
export interface RedisCredentials {
  username?: string;
  password?: string;
}

export const REDIS_USERNAME_ENV = "PORTICO_REDIS_USERNAME";
export const REDIS_PASSWORD_FILE_ENV = "PORTICO_REDIS_PASSWORD_FILE";

/**
 * Reads the credentials the environment names; none set is no credentials. The password file's
 * trailing newline is not part of the password. Errors name the variable and the file, never the
 * password.
 */
export function redisCredentialsFromEnv(env: NodeJS.ProcessEnv = process.env): RedisCredentials {
  const username = env[REDIS_USERNAME_ENV]?.trim() || undefined;
  const file = env[REDIS_PASSWORD_FILE_ENV]?.trim() || undefined;
  if (!file) {
    if (username)
      throw new Error(
        `${REDIS_USERNAME_ENV} is set but ${REDIS_PASSWORD_FILE_ENV} is not: Redis users log in with a password`,
      );
    return {};
  }
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(
      `${REDIS_PASSWORD_FILE_ENV} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      {
        cause: err,
      },
    );
  }
  const password = text.replace(/\r?\n$/, "");
  if (password === "") throw new Error(`${REDIS_PASSWORD_FILE_ENV} ${file} is empty`);
  if (/[\r\n]/.test(password)) throw new Error(`${REDIS_PASSWORD_FILE_ENV} ${file} holds more than one line`);
  return { username, password };
}

/**
 * Connection options with the credentials filled in where the options (parsed from a URL) name
 * none: a URL's own `user:password@` wins.
 */
export function withRedisCredentials<T extends { username?: string; password?: string }>(
  options: T,
  credentials: RedisCredentials,
): T {
  if (options.password !== undefined && options.password !== "") return options;
  if (credentials.password === undefined) return options;
  return {
    ...options,
    password: credentials.password,
    ...(options.username || credentials.username === undefined ? {} : { username: credentials.username }),
  };
}
