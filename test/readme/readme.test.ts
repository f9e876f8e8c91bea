// The README's snippets, run or checked as each one's marker says (test/readme/snippets.ts), so
// that what the README shows and what Portico does cannot drift apart. Shell snippets marked
// `demo` run against the demo, started here as `npm run demo` starts it, on free ports; those
// marked `compose` run in test/e2e/compose.test.ts against the compose stack.
import fs from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ConfigSchema, parseConfigText } from "@portico/control-plane";
import { DEMO_PORTS, PORT_NAMES } from "@portico/deploy";
import { checkShellSnippet, failures } from "./check.js";
import { startDemo, type RunningDemo } from "./demo-process.js";
import { README, snippets } from "./snippets.js";

const all = snippets(fs.readFileSync(README, "utf8"));
const where = (s: { line: number; section: string }) => `README.md:${s.line} (${s.section})`;

describe("the README's snippets", () => {
  it("each say how they are tested", () => {
    const unmarked = all.filter((s) => !s.marker).map(where);
    expect(unmarked, "add <!-- readme-test: … --> before each (test/readme/snippets.ts)").toEqual([]);
    expect(all.filter((s) => s.marker?.kind === "demo").length).toBeGreaterThan(0);
    expect(all.filter((s) => s.marker?.kind === "compose").length).toBeGreaterThan(0);
  });
  for (const s of all.filter((x) => x.marker?.kind === "config"))
    it(`${where(s)} is a config the control plane accepts`, () => {
      expect(() => parseConfigText(s.text, where(s))).not.toThrow();
    });
  for (const s of all.filter((x) => x.marker?.kind === "config-part"))
    it(`${where(s)} has only fields the config has, each of its type`, () => {
      const result = ConfigSchema.safeParse(parse(s.text));
      expect(result.success ? [] : result.error.issues).toEqual([]);
    });
});

describe("the quick start, against the demo", () => {
  let demo: RunningDemo;
  beforeAll(async () => {
    demo = await startDemo();
  }, 180_000);
  afterAll(async () => {
    await demo?.stop();
  }, 30_000);

  it("serves the first request once it says it is up", async () => {
    // At once, no retry: "up" means ext-authz and the rate limiter are ready, not just started.
    const res = await fetch(`http://127.0.0.1:${demo.ports.edge}/echo/first`, {
      headers: { "x-api-key": "pk_demo_portico_0000000000000000" },
    });
    expect(res.status, await res.text()).toBe(200);
  });

  for (const s of all.filter((x) => x.marker?.kind === "demo"))
    it(`${where(s)} answers as the README says`, { timeout: 120_000 }, async () => {
      const replacements = new Map<string, string>();
      for (const name of PORT_NAMES)
        for (const host of ["127.0.0.1", "localhost"])
          replacements.set(`${host}:${DEMO_PORTS[name].port}`, `${host}:${demo.ports[name]}`);
      const results = await checkShellSnippet(s, {
        env: {
          ...process.env,
          PORTICO_TOKEN: demo.token,
          PORTICO_SERVER: `http://127.0.0.1:${demo.ports.admin}`,
        },
        replacements,
      });
      expect(failures(results), demo.lines.slice(-40).join("\n")).toEqual([]);
    });
});
