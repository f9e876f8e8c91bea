import type { ChildProcess } from "node:child_process";

/** Everything a run starts, stopped on the way out, error or not, newest first. */
export class Cleanups {
  private readonly stack: (() => Promise<void> | void)[] = [];
  private readonly children = new Set<ChildProcess>();
  private stopping = false;

  push(fn: () => Promise<void> | void): void {
    this.stack.push(fn);
  }

  /** A child still running when this process exits is killed with it. */
  track(child: ChildProcess): void {
    this.children.add(child);
    child.once("exit", () => this.children.delete(child));
  }

  async run(): Promise<void> {
    while (this.stack.length > 0) {
      const fn = this.stack.pop()!;
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`cleanup: ${(err as Error).message}\n`);
      }
    }
  }

  /** Stops everything on SIGINT/SIGTERM and on exit; a second signal exits at once. */
  install(): void {
    process.on("exit", () => {
      for (const c of this.children) c.kill("SIGKILL");
    });
    // `on`, not `once`: the Envoy harness re-raises the signal when no other listener is left,
    // which would end this process before the control plane child is stopped.
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      process.on(sig, () => {
        if (this.stopping) process.exit(130);
        this.stopping = true;
        process.stderr.write(`\n${sig}: stopping everything started\n`);
        void this.run().finally(() => process.exit(130));
      });
    }
  }
}
