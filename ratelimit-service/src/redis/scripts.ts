import { createHash } from "node:crypto";
import { Cluster } from "ioredis";
import type { RedisClient } from "./connect.js";

export interface Script {
  readonly lua: string;
  readonly sha: string;
}

function script(lua: string): Script {
  return { lua, sha: createHash("sha1").update(lua).digest("hex") };
}

/**
 * One descriptor's decision, atomically: read every limit's state, decide as
 * `limiter/algorithms.ts` `isOver` + `decide` do, commit, and return the states read before, so
 * the caller computes the answer with the same functions as the memory backend.
 *
 * KEYS: per limit, counter → [key]; sliding → [current, previous]; bucket → [key]
 * ARGV: now, hits, countRefused (1/0), number of limits, then per limit:
 *       kind (c|s|b), limit, p1, p2, shadow (1/0) where
 *       c: p1 = expire-at (ms)          s: p1 = expire-at, p2 = previous window's weight
 *       b: p1 = ms per token, p2 = capacity
 * Returns: admitted (1/0), then per limit the value before (count / current count / TAT) and,
 * for sliding, the previous window's count.
 */
export const DECIDE = script(`
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local countRefused = ARGV[3] == '1'
local m = tonumber(ARGV[4])
local kinds, p1s, raw, keyAt, cur, prev = {}, {}, {}, {}, {}, {}
local admitted = true
local a, k = 5, 1
for i = 1, m do
  local kind = ARGV[a]
  local limit = tonumber(ARGV[a + 1])
  local p1 = tonumber(ARGV[a + 2])
  local p2 = tonumber(ARGV[a + 3])
  local shadow = ARGV[a + 4] == '1'
  a = a + 5
  -- The raw text too: a 13-digit expiry must not go through Lua's %.14g number formatting.
  kinds[i], p1s[i], raw[i], keyAt[i] = kind, p1, ARGV[a - 3], k
  cur[i] = tonumber(redis.call('GET', KEYS[k]) or '0')
  local over = false
  if kind == 'c' then
    over = cur[i] + n > limit
    k = k + 1
  elseif kind == 's' then
    prev[i] = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
    over = prev[i] * p2 + cur[i] + n > limit
    k = k + 2
  else
    if n > 0 then
      if limit <= 0 then
        over = true
      else
        over = math.max(cur[i], now) + n * p1 - p2 * p1 > now + 1e-6
      end
    end
    k = k + 1
  end
  if over and not shadow then admitted = false end
end
local out = { admitted and 1 or 0 }
for i = 1, m do
  local key = KEYS[keyAt[i]]
  if n > 0 then
    if kinds[i] == 'b' then
      if admitted then
        local tat = math.max(cur[i], now) + n * p1s[i]
        redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
      end
    elseif admitted or countRefused then
      redis.call('INCRBY', key, ARGV[2])
      redis.call('PEXPIREAT', key, raw[i])
    end
  end
  if kinds[i] == 'b' then
    out[#out + 1] = string.format('%.3f', cur[i])
  else
    out[#out + 1] = tostring(cur[i])
  end
  if kinds[i] == 's' then out[#out + 1] = tostring(prev[i]) end
end
return out
`);

/**
 * Hands counts kept locally to Redis and reads the global state back (local-first sync, and the
 * resync after an outage).
 *
 * KEYS: per item, counter → [key]; sliding → [current, previous]; bucket → [key]
 * ARGV: now, number of items, then per item: kind, hits, p1, p2, p3 where
 *       c, s: p1 = expire-at
 *       b: p1 = ms per token, p2 = the instance's own TAT estimate, p3 = the global TAT it was
 *          based on (-1 when it has none): others' progress since then is added to it
 * Returns per item: c → count; s → current count, previous count; b → TAT.
 */
export const SYNC = script(`
local now = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local out = {}
local a, k = 3, 1
for i = 1, m do
  local kind = ARGV[a]
  local d = tonumber(ARGV[a + 1])
  local p1 = tonumber(ARGV[a + 2])
  local p2 = tonumber(ARGV[a + 3])
  local p3 = tonumber(ARGV[a + 4])
  a = a + 5
  local key = KEYS[k]
  if kind == 'b' then
    local g = tonumber(redis.call('GET', key) or '0')
    if d > 0 then
      local tat
      if p3 < 0 then
        tat = math.max(p2, now) + math.max(0, g - now)
      else
        tat = math.max(p2 + math.max(0, g - p3), g)
      end
      redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
      g = tat
    end
    out[#out + 1] = string.format('%.3f', g)
    k = k + 1
  else
    local v
    if d > 0 then
      v = redis.call('INCRBY', key, ARGV[a - 4])
      redis.call('PEXPIREAT', key, ARGV[a - 3])
    else
      v = tonumber(redis.call('GET', key) or '0')
    end
    out[#out + 1] = tostring(v)
    if kind == 's' then
      out[#out + 1] = tostring(tonumber(redis.call('GET', KEYS[k + 1]) or '0'))
      k = k + 2
    else
      k = k + 1
    end
  end
end
return out
`);

/**
 * Instance membership, for the share each instance takes: a sorted set of instance ids scored by
 * when they expire. KEYS: the set. ARGV: now, id, ttl ms, leaving (1/0). Returns the live count.
 */
export const MEMBERS = script(`
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return redis.call('ZCARD', KEYS[1])
`);

/** EVALSHA, falling back to EVAL when Redis has forgotten the script (a restart, a failover). */
export async function runScript(
  client: RedisClient,
  s: Script,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<unknown> {
  try {
    return await client.evalsha(s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!(err as Error).message?.startsWith("NOSCRIPT")) throw err;
    return await client.eval(s.lua, keys.length, ...keys, ...args);
  }
}

/**
 * Loads scripts before decisions need them, so a restarted Redis does not answer a burst of
 * decisions with NOSCRIPT and a second round trip each. On a Cluster, on every primary.
 */
export async function loadScripts(client: RedisClient, scripts: readonly Script[]): Promise<void> {
  const targets = client instanceof Cluster ? client.nodes("master") : [client];
  await Promise.all(targets.flatMap((node) => scripts.map((s) => node.script("LOAD", s.lua))));
}
