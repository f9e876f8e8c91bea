import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hashToken } from "@portico/control-plane";
import { spawnControlPlane } from "../harness/control-plane-process.js";
import {
  ADMIN_TOKEN,
  freePorts,
  httpRequest,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";

/** Kill rounds; PORTICO_HARDENING_SCALE multiplies them for the longer run in bench/hardening.ts. */
const ROUNDS = 5 * Number(process.env.PORTICO_HARDENING_SCALE ?? 1);

/**
 * Writes through the admin API while the control plane is killed with SIGKILL, again and again:
 * every write that was answered with a 2xx must be there afterwards. Meanwhile a real Envoy serves
 * traffic on the routes it has: requests through it keep succeeding while its control plane is
 * down, and it reconverges on the last revision once the control plane is back.
 */
describe("durability of acknowledged writes", () => {
  const track = useEnvoyLogs();
  let envoy: EnvoyProcess | undefined;
  let upstream: HttpUpstream | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-durability-"));
  const tokensFile = path.join(dir, "tokens.json");
  fs.writeFileSync(
    tokensFile,
    JSON.stringify([{ name: "ci", role: "admin", sha256: hashToken(ADMIN_TOKEN) }]),
  );
  let child: ChildProcess | undefined;

  afterAll(async () => {
    child?.kill("SIGKILL");
    await envoy?.stop();
    await upstream?.close();
  });

  const start = (adminPort: number, xdsPort: number) =>
    spawnControlPlane({ store: `file:${path.join(dir, "store")}`, tokensFile, adminPort, xdsPort });

  const put = (adminPort: number, name: string) =>
    fetch(`http://127.0.0.1:${adminPort}/api/v1/upstreams/${name}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name, endpoints: [{ host: "127.0.0.1", port: 8000 }] }),
      signal: AbortSignal.timeout(5_000),
    });

  const api = (adminPort: number, method: string, p: string, body?: object) =>
    fetch(`http://127.0.0.1:${adminPort}${p}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });

  it(
    "loses no acknowledged write across repeated kill -9, and Envoy keeps serving",
    { timeout: (120_000 * ROUNDS) / 5 },
    async () => {
      const [adminPort, xdsPort, listenPort] = await freePorts(3);
      upstream = await startHttpUpstream("app");
      child = await start(adminPort, xdsPort);
      for (const [p, body] of [
        [
          "/api/v1/gateways/edge",
          { name: "edge", listeners: [{ name: "http", port: listenPort, address: "127.0.0.1" }] },
        ],
        ["/api/v1/upstreams/app", { name: "app", endpoints: [{ host: "127.0.0.1", port: upstream.port }] }],
        ["/api/v1/routes/app", { name: "app", gateway: "edge", match: { pathPrefix: "/" }, upstream: "app" }],
      ] as const) {
        expect((await api(adminPort, "PUT", p, body)).status).toBeLessThan(300);
      }
      envoy = track(await startEnvoy({ nodeId: "edge-durable", group: "edge", xdsPort }));
      await envoy.waitReady({ timeoutMs: 20_000 });
      // Traffic through Envoy for the whole run, on one keep-alive-free request at a time.
      let served = 0;
      let failedRequests = 0;
      let traffic = true;
      const load = (async () => {
        while (traffic) {
          const res = await httpRequest(`http://127.0.0.1:${listenPort}/x`).catch(() => undefined);
          if (res?.status === 200) served++;
          else failedRequests++;
        }
      })();

      const acknowledged: string[] = [];
      let sent = 0;
      let failed = 0;
      for (let round = 0; round < ROUNDS; round++) {
        if (round > 0) child = await start(adminPort, xdsPort);
        // Four writers at once, killed mid-stream, so the kill lands in the middle of commits.
        const writers = Promise.all(
          [0, 1, 2, 3].map(async (w) => {
            for (let i = 0; ; i++) {
              const name = `r${round}-w${w}-${i}`;
              sent++;
              const res = await put(adminPort, name).catch(() => undefined);
              if (!res) {
                failed++;
                return; // the process is gone
              }
              if (res.status >= 200 && res.status < 300) acknowledged.push(name);
              else failed++;
            }
          }),
        );
        await new Promise((r) => setTimeout(r, 300 + Math.floor(Math.random() * 500)));
        const exited = new Promise((r) => child!.once("exit", r));
        child.kill("SIGKILL");
        await writers;
        await exited;
      }
      child = await start(adminPort, xdsPort);
      const present = new Set<string>();
      for (let offset = 0; ; offset += 1000) {
        const page = await fetch(
          `http://127.0.0.1:${adminPort}/api/v1/upstreams?limit=1000&offset=${offset}`,
          {
            headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
          },
        );
        const items = ((await page.json()) as { items: { name: string }[] }).items;
        for (const u of items) present.add(u.name);
        if (items.length < 1000) break;
      }
      const lost = acknowledged.filter((n) => !present.has(n));
      // Envoy reconnects and applies the head revision: one more write shows it converged.
      const probe = await api(adminPort, "PUT", "/api/v1/routes/probe?wait=applied", {
        name: "probe",
        gateway: "edge",
        match: { path: "/probe" },
        directResponse: { status: 200, body: "converged" },
      });
      const rollout = ((await probe.json()) as { rollout?: { applied: boolean } }).rollout;
      await waitFor(
        async () => (await httpRequest(`http://127.0.0.1:${listenPort}/probe`)).body === "converged",
        {
          timeoutMs: 15_000,
          what: "Envoy serving the route written after the last restart",
        },
      );
      traffic = false;
      await load;
      console.log(
        `durability: ${ROUNDS} kill -9 rounds; ${sent} writes sent, ${acknowledged.length} acknowledged, ${failed} failed or cut off, ${lost.length} lost; ` +
          `through Envoy meanwhile: ${served + failedRequests} requests, ${failedRequests} failed`,
      );
      expect(acknowledged.length).toBeGreaterThan(20);
      expect(lost).toEqual([]);
      expect(rollout?.applied).toBe(true);
      expect(served).toBeGreaterThan(50);
      expect(failedRequests).toBe(0);
    },
  );
});
