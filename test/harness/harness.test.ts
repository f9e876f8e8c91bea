import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  freePorts,
  httpGet,
  httpRequest,
  parseStats,
  runningEnvoyCount,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type EnvoyProcess,
  type HttpUpstream,
} from "./index.js";
import { useEnvoyLogs } from "./logs.js";

describe("waitFor", () => {
  it("returns the first value that is not undefined, null or false", async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : n === 1 ? undefined : false), {
      what: "third call",
      intervalMs: 1,
    });
    expect(v).toEqual({ n: 3 });
  });

  it("treats 0 and empty string as values", async () => {
    expect(await waitFor(() => 0, { what: "zero" })).toBe(0);
    expect(await waitFor(async () => "", { what: "empty" })).toBe("");
  });

  it("keeps polling through errors", async () => {
    let n = 0;
    const v = await waitFor(
      () => {
        if (++n < 3) throw new Error("not yet");
        return "done";
      },
      { what: "flaky", intervalMs: 1 },
    );
    expect(v).toBe("done");
  });

  it("names what it waited for and the last value on timeout", async () => {
    let n = 0;
    const err = await waitFor(() => (n++, false), {
      what: "the moon to turn blue",
      timeoutMs: 120,
      intervalMs: 20,
    })
      .then(() => undefined)
      .catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/timed out after \d+ms \(\d+ attempts\) waiting for the moon to turn blue/);
    expect(err!.message).toMatch(/last value: false/);
    expect(n).toBeGreaterThanOrEqual(3);
  });

  it("reports the last error on timeout", async () => {
    let n = 0;
    const err = await waitFor(
      () => {
        throw new Error(`boom ${++n}`);
      },
      { what: "an exploding probe", timeoutMs: 80, intervalMs: 10 },
    ).catch((e: Error) => e);
    expect(err.message).toContain("waiting for an exploding probe");
    expect(err.message).toContain(`last error: boom ${n}`);
    expect((err as Error & { cause?: Error }).cause?.message).toBe(`boom ${n}`);
  });

  it("does not let a hung attempt outlive the timeout", async () => {
    const t0 = Date.now();
    const err = await waitFor(() => new Promise<string>(() => {}), {
      what: "a hung probe",
      timeoutMs: 100,
    }).catch((e: Error) => e);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect((err as Error).message).toMatch(/waiting for a hung probe.*still running at the deadline/);
  });

  it("tries once more at the deadline", async () => {
    const t0 = Date.now();
    const v = await waitFor(() => Date.now() - t0 >= 150 && "late", {
      what: "late condition",
      timeoutMs: 150,
      intervalMs: 1000,
    });
    expect(v).toBe("late");
  });
});

describe("ports", () => {
  it("hands out bindable loopback ports", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const srv = createServer();
    await new Promise<void>((resolve, reject) =>
      srv.once("error", reject).listen(port, "127.0.0.1", resolve),
    );
    await new Promise((resolve) => srv.close(resolve));
  });

  it("hands out distinct ports", async () => {
    const ports = await freePorts(20);
    expect(new Set(ports).size).toBe(20);
    expect(await freePorts(0)).toEqual([]);
    const [a, b] = await freePorts(2);
    const typed: number = a + b;
    expect(typed).toBeGreaterThan(0);
    const n: number = 3;
    expect(await freePorts(n)).toHaveLength(3);
  });

  it("hands out no port the kernel could give to a port-0 bind or a connection meanwhile", async () => {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/);
    for (const port of await freePorts(10)) expect(port).toBeLessThan(Number(low));
  });

  it("never hands out a port twice, even once it is free again, and skips one that is bound", async () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) seen.add(await freePort());
    expect(seen.size).toBe(50);
    // Bind the port that comes next; it is passed over.
    const next = Math.max(...seen) + 1;
    const srv = createServer();
    const bound = await new Promise<boolean>((resolve) =>
      srv.once("error", () => resolve(false)).listen(next, "127.0.0.1", () => resolve(true)),
    );
    try {
      const got = await freePorts(5);
      if (bound) expect(got).not.toContain(next);
      for (const p of got) expect(seen.has(p)).toBe(false);
    } finally {
      if (bound) await new Promise((resolve) => srv.close(resolve));
    }
  });
});

describe("http upstream", () => {
  let up: HttpUpstream;
  beforeAll(async () => {
    up = await startHttpUpstream("alpha");
  });
  afterAll(() => up?.close());

  it("echoes the request as JSON and names itself", async () => {
    const res = await httpGet(`${up.url}/a/b?c=1`, { "x-test": "yes" });
    expect(res.status).toBe(200);
    expect(res.headers["x-upstream"]).toBe("alpha");
    expect(res.headers["content-type"]).toBe("application/json");
    const body = res.json<any>();
    expect(body).toMatchObject({ upstream: "alpha", method: "GET", path: "/a/b?c=1" });
    expect(body.headers["x-test"]).toBe("yes");
    expect(body.headers.connection).toBe("close");
  });

  it("counts requests, answers other methods and switches status", async () => {
    const before = up.requests;
    const post = await httpRequest(`${up.url}/p`, { method: "POST", body: "x".repeat(100_000) });
    expect(post.json<any>().method).toBe("POST");
    up.setStatus(503);
    const res = await httpGet(`${up.url}/down`);
    expect(res.status).toBe(503);
    expect(res.json<any>().upstream).toBe("alpha");
    up.setStatus(200);
    expect(up.requests).toBe(before + 2);
    expect(() => up.setStatus(42)).toThrow(/invalid HTTP status/);
  });

  it("listens on a requested port and closes", async () => {
    const port = await freePort();
    const other = await startHttpUpstream("beta", { port, status: 201 });
    expect(other.port).toBe(port);
    expect((await httpGet(`${other.url}/`)).status).toBe(201);
    await other.close();
    await expect(httpGet(`${other.url}/`)).rejects.toThrow(/ECONNREFUSED/);
  });

  it("times out with the URL in the message", async () => {
    const silent = createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const port = (silent.address() as { port: number }).port;
    try {
      await expect(httpRequest(`http://127.0.0.1:${port}/slow`, { timeoutMs: 150 })).rejects.toThrow(
        `GET http://127.0.0.1:${port}/slow timed out after 150ms`,
      );
    } finally {
      silent.close();
    }
  });
});

describe("parseStats", () => {
  it("keeps counters and gauges and drops text readouts and histograms", () => {
    const body = JSON.stringify({
      stats: [
        { name: "cluster_manager.cds.version_text", value: "" },
        { name: "server.live", value: 0 },
        { name: "cluster.a.upstream_cx_total", value: 7 },
        { histograms: { supported_quantiles: [], computed_quantiles: [] } },
      ],
    });
    expect([...parseStats(body)]).toEqual([
      ["server.live", 0],
      ["cluster.a.upstream_cx_total", 7],
    ]);
  });
});

describe("Envoy with an unreachable control plane", () => {
  const track = useEnvoyLogs();
  let envoy: EnvoyProcess;
  let xdsPort: number;

  beforeAll(async () => {
    xdsPort = await freePort();
    envoy = track(await startEnvoy({ nodeId: "harness-1", group: "harness", xdsPort }));
  }, 300_000);
  afterAll(async () => {
    await envoy?.stop();
  });

  it("answers on the admin port", async () => {
    expect(envoy.adminPort).toBeGreaterThan(0);
    expect(envoy.adminUrl).toBe(`http://127.0.0.1:${envoy.adminPort}`);
    expect(envoy.pid).toBeGreaterThan(0);
    expect(envoy.exitCode).toBeNull();
    const info = JSON.parse(await envoy.admin("/server_info"));
    expect(info.node.id).toBe("harness-1");
    expect(info.node.cluster).toBe("harness");
    expect(info.version).toContain(envoy.binary.version);
    expect(info.command_line_options.concurrency).toBe(1);
  });

  it("is not ready without xDS", async () => {
    const ready = await envoy.adminRequest("/ready");
    expect(ready.status).toBe(503);
    expect(ready.body.trim()).toMatch(/INITIALIZING/);
    expect(await envoy.serverState()).toMatch(/INITIALIZING/);
    await expect(envoy.waitReady({ timeoutMs: 300 })).rejects.toThrow(/harness-1 \/ready to answer 200/);
  });

  it("keeps trying to reach the control plane", async () => {
    const fails = await envoy.waitForStat("cluster.xds_cluster.upstream_cx_connect_fail", (v) => v >= 2);
    expect(fails).toBeGreaterThanOrEqual(2);
    expect(await envoy.stat("control_plane.connected_state")).toBe(0);
    expect(await envoy.stat("no.such.stat")).toBeUndefined();
    const all = await envoy.stats();
    expect(all.get("control_plane.connected_state")).toBe(0);
    expect(all.size).toBeGreaterThan(50);
  });

  it("reads config_dump, listeners, routes, clusters and endpoints", async () => {
    const dump = await envoy.configDump();
    expect(dump.configs.some((c: any) => c["@type"].endsWith(".BootstrapConfigDump"))).toBe(true);
    expect(await envoy.listeners()).toEqual([]);
    expect(await envoy.routeConfigs()).toEqual([]);
    expect(await envoy.clusters()).toEqual([]);
    expect(await envoy.endpoints("xds_cluster")).toEqual([`127.0.0.1:${xdsPort}`]);
    expect(await envoy.endpoints("nope")).toEqual([]);
  });

  it("captures its logs in memory and in a file", async () => {
    const line = await envoy.waitForLog(/starting main dispatch loop/);
    expect(line).toContain("[main]");
    expect(envoy.logs()).toContain("xds_cluster");
    expect(envoy.logs(1).split("\n")).toHaveLength(1);
    await waitFor(
      async () => (await readFile(envoy.logFile, "utf8")).includes("starting main dispatch loop"),
      {
        what: "the log file to contain the start-up line",
      },
    );
    expect(existsSync(envoy.bootstrapFile)).toBe(true);
  });

  it("rejects failing admin calls with the status", async () => {
    await expect(envoy.admin("/no-such-endpoint")).rejects.toThrow(/→ 404/);
  });
});

describe("Envoy lifecycle", () => {
  const track = useEnvoyLogs();

  it("stops on SIGTERM, records the exit, and is safe to stop twice", async () => {
    const xdsPort = await freePort();
    const envoy = track(
      await startEnvoy({ nodeId: "harness-stop", group: "harness", xdsPort, protocol: "delta" }),
    );
    const running = runningEnvoyCount();
    expect(running).toBeGreaterThanOrEqual(1);
    const config = await readFile(envoy.bootstrapFile, "utf8");
    expect(config).toContain("api_type: DELTA_GRPC");

    const exit = await envoy.stop();
    expect(exit).toEqual({ code: 0, signal: null });
    expect(envoy.exitCode).toBe(0);
    expect(runningEnvoyCount()).toBe(running - 1);
    expect(() => process.kill(envoy.pid, 0)).toThrow();
    await expect(httpGet(`${envoy.adminUrl}/ready`)).rejects.toThrow(/ECONNREFUSED/);
    expect(await envoy.stop()).toEqual(exit);
    // Everything Envoy printed before exiting is in the file, shutdown included.
    expect(await readFile(envoy.logFile, "utf8")).toMatch(/caught ENVOY_SIGTERM|exiting/);
  });

  it("falls back to SIGKILL and reports the signal", async () => {
    const envoy = track(
      await startEnvoy({ nodeId: "harness-kill", group: "harness", xdsPort: await freePort() }),
    );
    // SIGSTOP ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    process.kill(envoy.pid, "SIGSTOP");
    const t0 = Date.now();
    const exit = await envoy.stop();
    expect(exit).toEqual({ code: null, signal: "SIGKILL" });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2500);
    expect(envoy.exitCode).toBeNull();
  }, 20_000);

  it("reports a start-up failure with Envoy's own error", async () => {
    const err = await startEnvoy({
      nodeId: "harness-bad",
      group: "harness",
      xdsPort: await freePort(),
      extraArgs: ["--mode", "not-a-mode"],
    }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/harness-bad exited \(code \d+\) before its admin API answered/);
    expect((err as Error).message).toMatch(/not-a-mode/);
  });

  it("runs two Envoys side by side", async () => {
    const [a, b] = await Promise.all(
      ["harness-a", "harness-b"].map(async (nodeId) =>
        track(await startEnvoy({ nodeId, group: "pair", xdsPort: await freePort() })),
      ),
    );
    try {
      expect(a!.adminPort).not.toBe(b!.adminPort);
      expect(JSON.parse(await a!.admin("/server_info")).node.id).toBe("harness-a");
      expect(JSON.parse(await b!.admin("/server_info")).node.id).toBe("harness-b");
    } finally {
      await Promise.all([a!.stop(), b!.stop()]);
    }
  });
});

describe("Envoy safety net", () => {
  // A helper process starts an Envoy and then ends without stopping it.
  async function orphanScenario(ending: "exit" | "SIGTERM" | "SIGINT"): Promise<number> {
    const dir = await mkdtemp(path.join(tmpdir(), "portico-orphan-"));
    const script = path.join(dir, "orphan.mts");
    const envoyModule = new URL("./envoy.ts", import.meta.url).href;
    await writeFile(
      script,
      `import { startEnvoy } from ${JSON.stringify(envoyModule)};\n` +
        `const e = await startEnvoy({ nodeId: "orphan", group: "g", xdsPort: Number(process.argv[2]) });\n` +
        `console.log("PID " + e.pid);\n` +
        `if (process.argv[3] === "exit") process.exit(0);\n` +
        `setInterval(() => {}, 1000);\n`,
    );
    const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
    // Run node directly so the signal reaches the process that owns the Envoy, not a tsx wrapper.
    const child = spawn(process.execPath, ["--import", "tsx", script, String(await freePort()), ending], {
      cwd: path.dirname(path.dirname(tsx)),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c) => (out += c));
    child.stderr.on("data", (c) => (out += c));
    const closed = new Promise((resolve) => child.once("close", resolve));
    try {
      const pid = await waitFor(() => Number(/PID (\d+)/.exec(out)?.[1]) || undefined, {
        what: "the helper to report its Envoy pid",
        timeoutMs: 30_000,
      });
      expect(() => process.kill(pid, 0)).not.toThrow();
      if (ending !== "exit") child.kill(ending);
      await closed;
      return pid;
    } finally {
      child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    }
  }

  const gone = (pid: number) => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };

  for (const ending of ["exit", "SIGTERM", "SIGINT"] as const) {
    it(`kills Envoys left running when the process ends by ${ending}`, async () => {
      const pid = await orphanScenario(ending);
      await waitFor(() => gone(pid), { what: `orphaned Envoy ${pid} to be killed`, timeoutMs: 5000 });
    }, 60_000);
  }
});

describe("waitFor timeout stack", () => {
  it("points at the caller rather than at wait.ts", async () => {
    const err = await waitFor(() => false, { what: "nothing", timeoutMs: 20 }).catch((e: Error) => e);
    const firstFrame = (err as Error).stack!.split("\n")[1] ?? "";
    expect(firstFrame).toContain("harness.test.ts");
    expect((err as Error).stack!.split("\n")[0]).toContain("waiting for nothing");
  });
});
