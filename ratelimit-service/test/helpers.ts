import path from "node:path";
import { fileURLToPath } from "node:url";
import { buildConfig } from "../src/config/load.js";
import type { RateLimitConfig } from "../src/config/types.js";
import { ManualClock } from "../src/limiter/clock.js";
import { MemoryLimiter } from "../src/limiter/memory.js";
import type { RateLimitRequest, RateLimitResponse } from "../src/service/codec.js";
import { RateLimitHandler } from "../src/service/rls.js";

export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");

/** A descriptor from `k=v` pairs, e.g. d("database=users") or d("message_type=marketing", "to_number=1"). */
export function d(...pairs: string[]): RateLimitRequest["descriptors"][number] {
  return {
    entries: pairs.map((p) => {
      const i = p.indexOf("=");
      return { key: p.slice(0, i), value: p.slice(i + 1) };
    }),
  };
}

export function req(domain: string, ...descriptors: RateLimitRequest["descriptors"]): RateLimitRequest {
  return { domain, descriptors };
}

export function yamlConfig(text: string, file = "test.yaml"): RateLimitConfig {
  return buildConfig([{ file, text }]);
}

/** A handler on a memory limiter with a clock the test moves. */
export function memoryHandler(config: RateLimitConfig, start = Date.UTC(2030, 0, 1)) {
  const clock = new ManualClock(start);
  const limiter = new MemoryLimiter({ clock });
  const handler = new RateLimitHandler(config, { limiter });
  return { clock, limiter, handler };
}

/** Sends `count` identical requests and counts the answers. */
export async function send(
  handler: RateLimitHandler,
  request: RateLimitRequest,
  count: number,
): Promise<{ ok: number; over: number; last: RateLimitResponse }> {
  let ok = 0;
  let over = 0;
  let last!: RateLimitResponse;
  for (let i = 0; i < count; i++) {
    last = await handler.shouldRateLimit(request);
    if (last.overall_code === "OK") ok++;
    else over++;
  }
  return { ok, over, last };
}
