// What the quick start says of the demo's start and stop: every signal a terminal or `kill` sends
// to `npm run demo` stops every process it started, with no port left held, and a port in use is
// one line naming it and the variable that moves it.
import net from "node:net";
import { describe, expect, it } from "vitest";
import { checkPortsFree } from "@portico/deploy";
import { waitFor } from "../harness/wait.js";
import { descendants, isRunning, startDemo } from "./demo-process.js";

describe("the demo's lifecycle", () => {
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
    it(
      `${signal} to the launcher stops every process, and frees every port`,
      { timeout: 180_000 },
      async () => {
        const demo = await startDemo();
        const pids = descendants(demo.launcher.pid!);
        // The demo, its three services and Envoy, under the launcher.
        expect(pids.length).toBeGreaterThanOrEqual(5);
        demo.launcher.kill(signal);
        const { code } = await demo.exited;
        expect(code).toBe(0);
        expect(pids.filter(isRunning)).toEqual([]);
        expect(await checkPortsFree(demo.ports)).toBeUndefined();
      },
    );

  it("stops when npm is killed (npm passes on no SIGHUP)", { timeout: 180_000 }, async () => {
    // bash stands in for npm: the parent of the launcher, killed without a chance to pass anything on.
    const demo = await startDemo({ parentShell: true, env: { npm_lifecycle_event: "demo" } });
    const pids = descendants(demo.launcher.pid!);
    expect(pids.length).toBeGreaterThanOrEqual(6);
    demo.launcher.kill("SIGKILL");
    await waitFor(() => pids.every((pid) => !isRunning(pid)), {
      what: "every process of the demo to exit",
      timeoutMs: 15_000,
    });
    expect(await checkPortsFree(demo.ports)).toBeUndefined();
  });

  it("says in one line which port is taken and how to move it", { timeout: 120_000 }, async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as net.AddressInfo).port;
    try {
      const failed = await startDemo({ env: { PORTICO_DEMO_HELLO_PORT: String(port) } }).then(
        () => undefined,
        (err: Error) => err.message,
      );
      expect(failed).toMatch(
        new RegExp(
          `\\ndemo: port already in use: ${port} \\(the sample upstream 'hello': PORTICO_DEMO_HELLO_PORT\\)`,
        ),
      );
      // One line: no stack trace.
      expect(failed).not.toMatch(/^\s+at /m);
    } finally {
      holder.close();
    }
  });
});
