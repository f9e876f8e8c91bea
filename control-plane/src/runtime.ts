/**
 * How the control plane's process is started wherever Portico ships it (the image's default
 * command, docker-compose, Kubernetes, `npm run control-plane`): measured in `bench/xds.ts`
 * section 6, 10,000 routes served to 1,000 delta clients, where they hold its resident memory
 * after the fleet has synced near 210 MiB instead of about 400 MiB, at no measured cost to the
 * time a change takes to reach the fleet (and near 170 MiB once the release after a busy spell,
 * idle-release.ts, has run).
 *
 * - A 2 MiB young generation: every fan-out makes hundreds of MiB of short-lived buffers and
 *   objects, and V8 otherwise grows each semi-space to its maximum and keeps it committed.
 * - Two malloc arenas and a fixed mmap threshold: glibc otherwise raises the threshold after
 *   the first large buffer is freed, so later ones come from arenas it never returns, one arena
 *   per thread that allocated.
 */
export const CONTROL_PLANE_NODE_ARGS: readonly string[] = ["--max-semi-space-size=2"];

export const CONTROL_PLANE_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: "2",
  MALLOC_MMAP_THRESHOLD_: "131072",
};
