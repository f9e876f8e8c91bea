import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { buildSnapshots, parseConfigText, staticBootstrap, translate } from "@portico/control-plane";
import { findEnvoy } from "@portico/envoy";
import { encodeMessage } from "@portico/contract";
import { parse } from "yaml";
import { ensurePki } from "../pki/ensure.js";
import { FilePkiStore } from "../pki/file-store.js";
import { parsePkiArgs } from "../pki/init.js";
import {
  COMPOSE_ENVOY_READY_PORT,
  COMPOSE_ENVOYS,
  COMPOSE_PKI_DIR,
  renderComposeBootstrap,
} from "./render-bootstraps.js";

const run = promisify(execFile);
const here = path.dirname(new URL(import.meta.url).pathname);

interface Service {
  image?: string;
  user?: string;
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}
const compose = parse(fs.readFileSync(path.join(here, "..", "docker-compose.yml"), "utf8"), {
  merge: true,
}) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
/** The PKI volumes a service mounts: volume name → mount point and mode (`/etc/portico/pki:ro`). */
const pkiMounts = (svc: Service) =>
  new Map(
    (svc.volumes ?? [])
      .map((v) => v.split(":"))
      .filter(([name]) => name!.startsWith("pki-"))
      .map(([name, ...at]) => [name!, at.join(":")]),
  );
const certsPlan = () => parsePkiArgs(services.certs!.command!.slice(1), {});

describe("deploy files", () => {
  it("the committed Envoy bootstraps are what the template renders, and Envoy accepts them with the PKI's files", async () => {
    const envoy = await findEnvoy();
    // Envoy reads the certificate files when it validates, so they are made for real, as `certs` does.
    const pki = fs.mkdtempSync(path.join(os.tmpdir(), "portico-compose-pki-"));
    await ensurePki(certsPlan().plan, new FilePkiStore(pki));
    for (const e of COMPOSE_ENVOYS) {
      const file = path.join(here, e.file);
      const text = fs.readFileSync(file, "utf8");
      expect(text, `${e.file} is stale: run npx tsx deploy/compose/render-bootstraps.ts`).toBe(
        renderComposeBootstrap(e.nodeId, e.group),
      );
      const local = path.join(pki, `${e.group}.yaml`);
      fs.writeFileSync(local, text.replaceAll(COMPOSE_PKI_DIR, path.join(pki, `gateway-${e.group}`)));
      await run(envoy.path, ["--mode", "validate", "-c", local, "--disable-hot-restart", "-l", "error"]);
    }
    fs.rmSync(pki, { recursive: true, force: true });
  });

  it("gives each service its own PKI volume, made by `certs` before it starts; the CA's key to no one else", () => {
    const { plan } = certsPlan();
    const made = new Set(["ca", ...(plan.redis ? ["redis"] : []), ...plan.workloads.map((w) => w.dir)]);
    const certsMounts = pkiMounts(services.certs!);
    expect(new Set([...certsMounts.keys()])).toEqual(new Set([...made].map((d) => `pki-${d}`)));
    for (const [volume, at] of certsMounts) expect(at).toBe(`/pki/${volume.slice(4)}`);
    expect(services.certs!.command).toContain("--out=/pki");
    expect(
      Object.keys(compose.volumes)
        .filter((v) => v.startsWith("pki-"))
        .sort(),
    ).toEqual([...certsMounts.keys()].sort());

    const mountedBy = new Map<string, string[]>();
    for (const [name, svc] of Object.entries(services)) {
      if (name === "certs") continue;
      const mounts = pkiMounts(svc);
      expect(mounts.size, `${name} mounts more than its own PKI volume`).toBeLessThanOrEqual(1);
      for (const [volume, at] of mounts) {
        expect(at, `${name} mounts ${volume} writable`).toMatch(/:ro$/);
        mountedBy.set(volume, [...(mountedBy.get(volume) ?? []), name]);
        expect(svc.depends_on?.certs?.condition, `${name} must wait for certs`).toBe(
          "service_completed_successfully",
        );
      }
      expect(mounts.has("pki-ca"), `${name} mounts the CA's key`).toBe(false);
    }
    // A volume per workload, each mounted by exactly one service.
    for (const [volume, users] of mountedBy) expect(users, volume).toHaveLength(1);
    expect(services.redis!.volumes).toContain("pki-redis:/etc/redis/pki:ro");
  });

  it("runs every internal hop authenticated: mTLS xDS, gateway-only policy services, Redis with a password, admin on loopback", () => {
    const args = (name: string) => services[name]!.command!;
    const cp = args("control-plane");
    for (const flag of ["--xds-tls-cert=", "--xds-tls-key=", "--xds-tls-client-ca="])
      expect(
        cp.some((a) => a.startsWith(flag)),
        flag,
      ).toBe(true);
    expect(cp.join(" ")).not.toMatch(/--xds-insecure/);
    expect(services["control-plane"]!.environment?.PORTICO_XDS_INSECURE).toBeUndefined();
    for (const name of ["ext-authz", "ratelimit", "aggregator"]) {
      const a = args(name);
      for (const flag of ["--xds-tls-ca=", "--xds-tls-cert=", "--xds-tls-key="])
        expect(
          a.some((x) => x.startsWith(flag)),
          `${name} ${flag}`,
        ).toBe(true);
    }
    for (const name of ["ext-authz", "ratelimit"])
      for (const flag of ["--tls-cert=", "--tls-key=", "--tls-client-ca="])
        expect(
          args(name).some((x) => x.startsWith(flag)),
          `${name} ${flag}`,
        ).toBe(true);
    for (const name of ["control-plane", "ratelimit", "aggregator"]) {
      expect(services[name]!.environment?.PORTICO_REDIS_USERNAME, name).toBe("portico");
      expect(services[name]!.environment?.PORTICO_REDIS_PASSWORD_FILE, name).toBe(
        `${COMPOSE_PKI_DIR}/redis-password`,
      );
    }
    expect(services.certs!.command).toContain("--redis-user=portico");
    expect(services.redis!.command).toEqual(
      expect.arrayContaining(["--aclfile", "/etc/redis/pki/users.acl"]),
    );
    expect(services.redis!.healthcheck!.test.join(" ")).toMatch(/REDISCLI_AUTH=.*--user portico ping/);

    for (const e of COMPOSE_ENVOYS) {
      const bootstrap = parse(renderComposeBootstrap(e.nodeId, e.group));
      expect(bootstrap.admin.address.socket_address.address, e.file).toBe("127.0.0.1");
      const xds = bootstrap.static_resources.clusters.find((c: { name: string }) => c.name === "xds_cluster");
      expect(xds.transport_socket.typed_config.common_tls_context.tls_certificates, e.file).toHaveLength(1);
      const [name] = [...composeEnvoyService(e.file)];
      expect(services[name!]!.healthcheck!.test, name).toContain(String(COMPOSE_ENVOY_READY_PORT));
      expect(pkiMounts(services[name!]!).get(`pki-gateway-${e.group}`), name).toBe(`${COMPOSE_PKI_DIR}:ro`);
    }
    const seed = parse(fs.readFileSync(path.join(here, "portico.yaml"), "utf8"));
    for (const name of ["ext-authz", "ratelimit"])
      expect(seed.upstreams.find((u: { name: string }) => u.name === name).tls, name).toEqual({
        gatewayIdentity: true,
        sni: name,
      });
    // The sidecars believe identity headers only from gateways, proven by mTLS; the gateways call
    // them with their gateway identity, checking each sidecar's certificate by its compose name.
    for (const [upstream, group, host] of [
      ["users", "sidecar-users", "users-envoy"],
      ["orders", "sidecar-orders", "orders-envoy"],
    ] as const) {
      expect(seed.upstreams.find((u: { name: string }) => u.name === upstream).tls, upstream).toEqual({
        gatewayIdentity: true,
        sni: host,
      });
      expect(services.certs!.command, group).toContain(`--gateway=${group}=${host}`);
      for (const l of seed.gateways.find((g: { name: string }) => g.name === group).listeners)
        expect(l, group).toMatchObject({
          protocol: "https",
          gatewayIdentity: true,
          trustIdentityHeaders: true,
        });
    }
  });

  for (const seed of ["compose/portico.yaml", "demo/portico.yaml"]) {
    it(`deploy/${seed} is valid, and Envoy accepts every gateway it defines`, async () => {
      const envoy = await findEnvoy();
      const config = parseConfigText(fs.readFileSync(path.join(here, "..", seed), "utf8"));
      expect(() => buildSnapshots(config)).not.toThrow();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-seed-"));
      for (const [group, resources] of translate(config)) {
        const file = path.join(dir, `${group}.pb`);
        fs.writeFileSync(
          file,
          encodeMessage("envoy.config.bootstrap.v3.Bootstrap", staticBootstrap(group, resources)),
        );
        await run(envoy.path, ["--mode", "validate", "-c", file, "--disable-hot-restart", "-l", "error"]);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    });
  }
});

/** The compose services that mount a bootstrap file. */
function composeEnvoyService(file: string): string[] {
  return Object.entries(services)
    .filter(([, svc]) => (svc.volumes ?? []).some((v) => v.startsWith(`./compose/${file}:`)))
    .map(([name]) => name);
}
