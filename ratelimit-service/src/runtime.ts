/**
 * How the rate limiter's process is started wherever Portico ships it (docker-compose, Kubernetes,
 * the demo, the benches): the Node arguments before its entry point.
 *
 * - A 4 MiB young generation. Left to itself, V8 grows each semi-space toward its maximum while
 *   much of what it scavenges survives, and under load most of a decision's objects (grpc-js's
 *   call, its HTTP/2 stream, the decoded request) survive one scavenge: each scavenge then copies
 *   and promotes megabytes, and every decision that arrives meanwhile waits for it. At a fixed
 *   3,000 decisions/s (bench/ratelimit.ts, Redis on loopback, 2 cores) scavenges stopped the
 *   service for 12–14 ms on average (up to 46 ms) twice a second, which is where its p99 was;
 *   with 4 MiB they stop it for about 2 ms (6–10 ms at most), some 30 times a second. Measured against
 *   the same build without it in the same rounds, p99 at 3,000/s fell from 22.8 to 18.8 ms
 *   (local-first) and from 27.5 to 19.6 ms (strict). The price is GC time: about 1.5× as much
 *   (70 instead of 47 ms/s), local-first's CPU per decision 261 against 247 µs at 3,000/s and
 *   463 against 361 µs at 1,000/s, and at 1,000/s local-first's p99 did not improve (10.3
 *   against 6.2 ms in that run, within the spread of its rounds).
 */
export const RATELIMIT_NODE_ARGS: readonly string[] = ["--max-semi-space-size=4"];
