import { createHash } from "node:crypto";
import type { Cluster, Redis } from "ioredis";
import { StoreUnavailableError } from "../types.js";
import { revisionKey, type StoreKeys } from "./keys.js";

/**
 * A commit is one script, so the compare-and-set, the history trim and the notification are
 * atomic: it writes revision expected+1 only if the head is still `expected`.
 */
const COMMIT = script(`
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local expected = tonumber(ARGV[1])
if head ~= expected then return {0, head} end
local n = expected + 1
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[1], n)
redis.call('ZADD', KEYS[2], n, ARGV[3])
local keep = tonumber(ARGV[4])
local old = redis.call('ZRANGE', KEYS[2], 0, -(keep + 1), 'WITHSCORES')
for i = 2, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
if #old > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(keep + 1)) end
redis.call('PUBLISH', ARGV[6], n)
return {1, n}
`);

/** The head revision in one round trip, so a concurrent trim cannot delete it between two reads. */
const HEAD = script(`
local n = redis.call('GET', KEYS[1])
if not n then return false end
return redis.call('GET', ARGV[1] .. n)
`);

interface Script {
  lua: string;
  sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

/** Whether the commit won, and the head it left: the new number, or the one that beat it. */
export interface CommitResult {
  won: boolean;
  head: number;
}

export interface CommitWrite {
  expected: number;
  /** The revision, as `encodeRevision` wrote it. */
  text: string;
  /** Its summary, JSON. */
  summary: string;
  keep: number;
}

export async function commitRevision(
  conn: Redis | Cluster,
  keys: StoreKeys,
  w: CommitWrite,
): Promise<CommitResult> {
  const reply = await run(
    conn,
    COMMIT,
    [keys.head, keys.revs, revisionKey(keys, w.expected + 1)],
    [w.expected, w.text, w.summary, w.keep, keys.revPrefix, keys.channel],
  );
  if (Array.isArray(reply) && reply.length === 2) {
    const won = Number(reply[0]);
    const head = Number(reply[1]);
    if ((won === 0 || won === 1) && Number.isSafeInteger(head)) return { won: won === 1, head };
  }
  throw new StoreUnavailableError(`unexpected reply from the commit script: ${JSON.stringify(reply)}`);
}

/** The head revision's JSON, or undefined when nothing was ever committed. */
export async function readHead(conn: Redis | Cluster, keys: StoreKeys): Promise<string | undefined> {
  const text = await run(conn, HEAD, [keys.head], [keys.revPrefix]);
  return typeof text === "string" ? text : undefined;
}

async function run(
  conn: Redis | Cluster,
  s: Script,
  keys: string[],
  args: (string | number)[],
): Promise<unknown> {
  try {
    return await conn.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    // Scripts are not persisted: a restarted or failed-over Redis has forgotten it.
    if (!(err as Error).message?.startsWith("NOSCRIPT")) throw err;
    return await conn.eval(s.lua, keys.length, ...keys, ...args);
  }
}
