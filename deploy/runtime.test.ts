import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_ARGS } from "@portico/control-plane";
import { EXT_AUTHZ_NODE_ARGS } from "@portico/ext-authz/runtime";
import { RATELIMIT_NODE_ARGS } from "@portico/ratelimit-service/runtime";

// Every way Portico ships the control plane starts it with the runtime settings its memory figures
// were measured with (control-plane/src/runtime.ts), so a deployment does not hold twice the memory
// the README quotes; and ext-authz and the rate limiter with the young generation their latency
// figures were measured with (each one's src/runtime.ts).
const here = path.dirname(new URL(import.meta.url).pathname);
const read = (file: string) => fs.readFileSync(path.join(here, file), "utf8");
const MAIN = "control-plane/dist/main.js";

/** The node arguments before the entry point, and the environment, of one way of starting it. */
interface Launch {
  nodeArgs: string[];
  env: Record<string, string>;
}

function beforeMain(argv: readonly string[], main = MAIN): string[] {
  const at = argv.indexOf(main);
  expect(at, `${main} in ${JSON.stringify(argv)}`).toBeGreaterThanOrEqual(0);
  return argv.slice(0, at);
}

function expectSettings(where: string, launch: Launch): void {
  for (const arg of CONTROL_PLANE_NODE_ARGS) expect(launch.nodeArgs, where).toContain(arg);
  for (const [name, value] of Object.entries(CONTROL_PLANE_ENV))
    expect(launch.env[name], `${where}: ${name}`).toBe(value);
}

describe("the control plane's runtime settings", () => {
  it("are in the image's default command and environment", () => {
    const dockerfile = read("Dockerfile").replace(/\\\n/g, " ");
    const cmd = /^CMD\s+(\[.*\])\s*$/m.exec(dockerfile);
    expect(cmd, "a CMD in exec form").not.toBeNull();
    const env: Record<string, string> = {};
    for (const line of dockerfile.split("\n").filter((l) => l.startsWith("ENV ")))
      for (const [, k, v] of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[k!] = v!;
    expectSettings("Dockerfile", { nodeArgs: beforeMain(JSON.parse(cmd![1]!) as string[]), env });
  });

  it("are in docker-compose", () => {
    const compose = parse(read("docker-compose.yml")) as {
      services: Record<string, { command: string[]; environment: Record<string, string> }>;
    };
    const cp = compose.services["control-plane"]!;
    expectSettings("docker-compose.yml", { nodeArgs: beforeMain(cp.command), env: cp.environment });
  });

  it("are in the Kubernetes Deployment", () => {
    const docs = parseAllDocuments(read("k8s/control-plane.yaml")).map((d) => d.toJS()) as {
      kind: string;
      spec?: {
        template?: {
          spec: { containers: { args: string[]; env: { name: string; value?: string }[] }[] };
        };
      };
    }[];
    const container = docs.find((d) => d.kind === "Deployment")!.spec!.template!.spec.containers[0]!;
    const env = Object.fromEntries(container.env.map((e) => [e.name, e.value ?? ""]));
    expectSettings("k8s/control-plane.yaml", { nodeArgs: beforeMain(container.args), env });
  });

  it("are in `npm run control-plane`", () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(here, "..", "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    const script = pkg.scripts["control-plane"]!;
    const words = script
      .slice(script.lastIndexOf("&&") + 2)
      .trim()
      .split(/\s+/);
    const env = Object.fromEntries(
      words
        .filter((w) => /^[A-Z_]+=/.test(w))
        .map((w) => [w.slice(0, w.indexOf("=")), w.slice(w.indexOf("=") + 1)]),
    );
    expectSettings("package.json", { nodeArgs: beforeMain(words), env });
  });
});

const POLICY_SERVICES: [name: string, composeService: string, main: string, args: readonly string[]][] = [
  ["ext-authz", "ext-authz", "ext-authz/dist/main.js", EXT_AUTHZ_NODE_ARGS],
  ["the rate limiter", "ratelimit", "ratelimit-service/dist/main.js", RATELIMIT_NODE_ARGS],
];

describe.each(POLICY_SERVICES)("%s's runtime settings", (_name, composeService, main, nodeArgs) => {
  const expectArgs = (where: string, argv: readonly string[]) => {
    expect(nodeArgs.length, "settings to check").toBeGreaterThan(0);
    for (const arg of nodeArgs) expect(beforeMain(argv, main), where).toContain(arg);
  };

  it("are in docker-compose", () => {
    const compose = parse(read("docker-compose.yml")) as { services: Record<string, { command: string[] }> };
    expectArgs("docker-compose.yml", compose.services[composeService]!.command);
  });

  it("are in the Kubernetes Deployment", () => {
    const docs = parseAllDocuments(read("k8s/policy-services.yaml")).map((d) => d.toJS()) as {
      kind: string;
      spec?: { template?: { spec: { containers: { name: string; args: string[] }[] } } };
    }[];
    const containers = docs
      .filter((d) => d.kind === "Deployment")
      .flatMap((d) => d.spec!.template!.spec.containers)
      .filter((c) => c.args.includes(main));
    expect(containers.length, `a container running ${main}`).toBe(1);
    expectArgs("k8s/policy-services.yaml", containers[0]!.args);
  });

  it("are in the image's documented command", () => {
    const line = read("Dockerfile")
      .split("\n")
      .find((l) => l.includes(main));
    expect(line, `the Dockerfile names ${main}'s command`).toBeDefined();
    expectArgs("Dockerfile", line!.replace(/^#\s*/, "").split(/\s+/));
  });
});
