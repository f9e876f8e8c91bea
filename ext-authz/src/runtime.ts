/**
 * How ext-authz's process is started wherever Portico ships it (docker-compose, Kubernetes, the
 * demo, the benches): the Node arguments before its entry point.
 *
 * - A 4 MiB young generation, for the reason the rate limiter has one
 *   (ratelimit-service/src/runtime.ts): a Check's objects (grpc-js's call, its HTTP/2 stream)
 *   mostly survive one scavenge, and with the young generation left to V8 each scavenge promoted
 *   about 5 MB and stopped the service for 17 ms on average (up to 35 ms) behind an Envoy at
 *   -c32 (bench/auth-envoy.ts, API-key route). With 4 MiB: about 2 ms (16 ms at most); in one
 *   round each, ext-authz's p99 on that route went from 1.65× to 0.77× of the no-work server's in
 *   the same run. The price is CPU: at 500 Checks/s, 453 µs per Check with it against 383 µs
 *   without (bench/ext-authz-check.ts with BENCH_BASELINE, both as production starts them, same
 *   rounds, medians of 3).
 */
export const EXT_AUTHZ_NODE_ARGS: readonly string[] = ["--max-semi-space-size=4"];
