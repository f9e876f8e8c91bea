// The packages and the one direction of their dependencies, checked on every file: a package
// reaches another only by its name and public entry point, never by a relative path into its
// folder, and the services depend on the contract, never on each other.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "@portico/envoy";

interface Workspace {
  dir: string;
  name: string;
  exports: string[];
  dependencies: string[];
}

const rootManifest = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as {
  workspaces: string[];
};
const workspaces: Workspace[] = rootManifest.workspaces.map((dir) => {
  const m = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, dir, "package.json"), "utf8")) as {
    name: string;
    exports?: Record<string, unknown>;
    dependencies?: Record<string, string>;
  };
  return {
    dir,
    name: m.name,
    exports: Object.keys(m.exports ?? {}),
    dependencies: Object.keys(m.dependencies ?? {}),
  };
});
const byName = new Map(workspaces.map((w) => [w.name, w]));

/**
 * What each runtime package may depend on: the contract depends on nothing of Portico's, the
 * shared code on the contract, each service on those two (and the control plane on the Envoy
 * helpers, to validate with a real Envoy). No service depends on another.
 */
const ALLOWED: Record<string, string[]> = {
  "@portico/contract": [],
  "@portico/envoy": [],
  "@portico/common": ["@portico/contract"],
  "@portico/control-plane": ["@portico/contract", "@portico/common", "@portico/envoy"],
  "@portico/ext-authz": ["@portico/contract", "@portico/common"],
  "@portico/ratelimit-service": ["@portico/contract", "@portico/common"],
  "@portico/aggregator": ["@portico/contract", "@portico/common"],
};

const SOURCE_FILE = /\.(ts|mts|mjs|js)$/;
const SKIP_DIRS = new Set(["node_modules", "dist", ".venv", "results", "fixtures"]);

function filesOf(dir: string): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) out.push(...filesOf(path.join(dir, entry.name)));
    } else if (SOURCE_FILE.test(entry.name) && !entry.name.endsWith(".d.ts")) {
      out.push(path.join(dir, entry.name));
    }
  }
  return out;
}

/** Every module specifier a file imports or re-exports, statically or dynamically. */
function specifiers(text: string): string[] {
  const found: string[] = [];
  const patterns = [
    /(?:^|[\s;])(?:import|export)\s[^'"`;]*?\sfrom\s*["']([^"']+)["']/g,
    /(?:^|[\s;])import\s*["']([^"']+)["']/g,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const re of patterns) for (const m of text.matchAll(re)) found.push(m[1]!);
  return found;
}

interface Violation {
  file: string;
  specifier: string;
  reason: string;
}

/** What one file of a workspace does wrong; `rel` is its path from the repository root. */
function checkFile(ws: Workspace, rel: string, text: string): Violation[] {
  const out: Violation[] = [];
  const root = path.join(REPO_ROOT, ws.dir);
  const file = path.join(REPO_ROOT, rel);
  const runtime = /^[^/]+\/(src|bin)\//.test(rel) && ws.name in ALLOWED;
  for (const spec of specifiers(text)) {
    if (spec.startsWith(".")) {
      if (path.relative(root, path.resolve(path.dirname(file), spec)).startsWith("..")) {
        out.push({ file: rel, specifier: spec, reason: "reaches into another package by a relative path" });
      }
      continue;
    }
    const m = /^(@portico\/[^/]+)(\/.*)?$/.exec(spec);
    if (!m) continue;
    const name = m[1]!;
    const subpath = m[2];
    const target = byName.get(name);
    if (!target) {
      out.push({ file: rel, specifier: spec, reason: "no workspace package has that name" });
      continue;
    }
    if (!target.exports.includes(subpath ? `.${subpath}` : ".")) {
      out.push({ file: rel, specifier: spec, reason: "not an entry point the package exports" });
    }
    if (runtime && name !== ws.name) {
      if (!ws.dependencies.includes(name)) {
        out.push({
          file: rel,
          specifier: spec,
          reason: `${name} is not in ${ws.dir}/package.json's dependencies`,
        });
      }
      const allowed = ALLOWED[ws.name]!;
      if (!allowed.includes(name)) {
        out.push({
          file: rel,
          specifier: spec,
          reason: `${ws.name} may depend only on ${allowed.join(", ") || "nothing of Portico's"}`,
        });
      }
    }
  }
  return out;
}

function violations(): Violation[] {
  return workspaces.flatMap((ws) =>
    filesOf(path.join(REPO_ROOT, ws.dir))
      // This file's own examples of what is refused are strings, not imports.
      .filter((file) => file !== fileURLToPath(import.meta.url))
      .flatMap((file) => checkFile(ws, path.relative(REPO_ROOT, file), fs.readFileSync(file, "utf8"))),
  );
}

describe("package boundaries", () => {
  it("every package is a workspace with a name, an entry point and a README", () => {
    for (const ws of workspaces) {
      expect(ws.name, ws.dir).toMatch(/^@portico\//);
      expect(fs.existsSync(path.join(REPO_ROOT, ws.dir, "README.md")), `${ws.dir}/README.md`).toBe(true);
    }
    for (const name of Object.keys(ALLOWED)) {
      expect(byName.get(name)?.exports, name).toContain(".");
    }
  });

  it("no file imports another package's files by path, or a package by anything but its entry points", () => {
    expect(violations()).toEqual([]);
  });

  it("the runtime packages' declared dependencies follow services → common → contract", () => {
    for (const [name, allowed] of Object.entries(ALLOWED)) {
      const declared = byName.get(name)!.dependencies.filter((d) => d.startsWith("@portico/"));
      for (const d of declared) expect(allowed, `${name} depends on ${d}`).toContain(d);
    }
  });

  it("finds what it is meant to find", () => {
    const controlPlane = byName.get("@portico/control-plane")!;
    const bad = [
      `import { compilePolicy } from "../../../ext-authz/src/policy/compile.js";`,
      `import { startAuthz } from "@portico/ext-authz";`,
      `export * from "@portico/common/src/log.js";`,
      `const m = await import("@portico/nope");`,
    ].join("\n");
    const reasons = checkFile(controlPlane, "control-plane/src/model/x.ts", bad).map((v) => v.reason);
    expect(reasons).toEqual([
      "reaches into another package by a relative path",
      "@portico/ext-authz is not in control-plane/package.json's dependencies",
      "@portico/control-plane may depend only on @portico/contract, @portico/common, @portico/envoy",
      "not an entry point the package exports",
      "no workspace package has that name",
    ]);
    const good = `import { createLogger } from "@portico/common";\nimport { x } from "./y.js";`;
    expect(checkFile(controlPlane, "control-plane/src/model/x.ts", good)).toEqual([]);
  });
});
