import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { hashToken } from "../../control-plane/src/admin/auth.js";
import { spawnControlPlane } from "../harness/control-plane-process.js";
import { ADMIN_TOKEN, freePorts } from "../harness/index.js";

/**
 * Writes through the admin API while the control plane is killed with SIGKILL, again and again:
 * every write that was answered with a 2xx must be there afterwards.
 */
describe("durability of acknowledged writes", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-durability-"));
  const tokensFile = path.join(dir, "tokens.json");
  fs.writeFileSync(
    tokensFile,
    JSON.stringify([{ name: "ci", role: "admin", sha256: hashToken(ADMIN_TOKEN) }]),
  );
  let child: ChildProcess | undefined;

  afterAll(() => {
    child?.kill("SIGKILL");
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

  it("loses no acknowledged write across repeated kill -9", { timeout: 120_000 }, async () => {
    const [adminPort, xdsPort] = await freePorts(2);
    const acknowledged: string[] = [];
    let sent = 0;
    let failed = 0;
    for (let round = 0; round < 5; round++) {
      child = await start(adminPort, xdsPort);
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
    const res = await fetch(`http://127.0.0.1:${adminPort}/api/v1/upstreams?limit=1000`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const present = new Set(((await res.json()) as { items: { name: string }[] }).items.map((u) => u.name));
    const lost = acknowledged.filter((n) => !present.has(n));
    console.log(
      `durability: ${sent} writes sent, ${acknowledged.length} acknowledged, ${failed} failed or cut off, ${lost.length} lost`,
    );
    expect(acknowledged.length).toBeGreaterThan(20);
    expect(lost).toEqual([]);
  });
});
