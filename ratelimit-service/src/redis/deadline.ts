/**
 * How long a decision waits on Redis, measured so that a stall of this process is not taken for a
 * slow Redis. A timer set for the deadline runs, after a stall (a GC pause, a CPU busy with other
 * work), in the same turn of the event loop that is about to read the reply that arrived in the
 * meantime: timers run before the loop polls its sockets. So when the time is up the loop is let
 * through one poll first, and only a reply still missing after it misses the deadline.
 */
export function withDeadline<T>(pending: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(
      () =>
        setImmediate(() => {
          if (settled) return;
          settled = true;
          reject(new Error(`Redis did not answer within ${ms} ms: timed out`));
        }),
      ms,
    );
    pending.then(
      (value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
