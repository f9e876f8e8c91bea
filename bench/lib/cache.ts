import os from "node:os";
import path from "node:path";

/** Where the benchmarks keep what they build between runs: $PORTICO_BENCH_CACHE, else ~/.cache/portico-bench. */
export function benchCacheDir(): string {
  return process.env.PORTICO_BENCH_CACHE ?? path.join(os.homedir(), ".cache", "portico-bench");
}
