import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TypeUrl, type ConfigInput } from "@portico/control-plane";
import { startTestControlPlane, type TestControlPlane } from "../harness/control-plane.js";
import {
  ADMIN_TOKEN,
  freePorts,
  httpGet,
  startEnvoy,
  startHttpUpstream,
  waitFor,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";
import { startDelayingProxy } from "./delaying-proxy.js";

/**
 * A real Envoy, bootstrapped over ADS to a real control plane, serving real upstreams; once with
 * state-of-the-world and once with delta xDS.
 */
describe.each(["sotw", "delta"] as const)("Envoy over ADS (%s)", (protocol) => {
  const track = useEnvoyLogs();
  let a: HttpUpstream;
  let b: HttpUpstream;
  let edgePort: number;
  let webPort: number;
  let cp: TestControlPlane;
  let envoy: EnvoyProcess;
  const extra: EnvoyProcess[] = [];

  const config = (routes: ConfigInput["routes"], aPort = a.port): ConfigInput => ({
    gateways: [
      { name: "edge", listeners: [{ name: "http", port: edgePort, address: "127.0.0.1" }] },
      { name: "bff-web", listeners: [{ name: "http", port: webPort, address: "127.0.0.1" }] },
    ],
    upstreams: [
      { name: "svc-a", endpoints: [{ host: "127.0.0.1", port: aPort }] },
      { name: "svc-b", endpoints: [{ host: "127.0.0.1", port: b.port }] },
    ],
    routes,
  });
  const base: ConfigInput["routes"] = [
    { name: "a", gateway: "edge", match: { pathPrefix: "/a" }, upstream: "svc-a" },
    { name: "web", gateway: "bff-web", match: { pathPrefix: "/" }, upstream: "svc-b" },
  ];

  const get = (path: string, port = edgePort) => httpGet(`http://127.0.0.1:${port}${path}`);
  /** Waits until a path answers as expected; Envoy applies config asynchronously. */
  const expectServed = (
    path: string,
    check: (status: number, upstream?: string) => boolean,
    port = edgePort,
  ) =>
    waitFor(
      async () => {
        const res = await get(path, port).catch(() => undefined);
        if (!res) return undefined;
        const upstream = res.headers["x-upstream"] as string | undefined;
        return check(res.status, upstream) ? { status: res.status, upstream } : undefined;
      },
      { what: `${path} on :${port} to be served as expected`, timeoutMs: 10_000, intervalMs: 25 },
    );

  beforeAll(async () => {
    a = await startHttpUpstream("svc-a");
    b = await startHttpUpstream("svc-b");
    [edgePort, webPort] = (await freePorts(2)) as [number, number];
    // Semantic checks would refuse the RE2-invalid regex the NACK test needs Envoy to refuse.
    cp = await startTestControlPlane(config(base), { skipSemanticChecks: true });
    envoy = track(
      await startEnvoy({ nodeId: `edge-${protocol}`, group: "edge", xdsPort: cp.xdsPort, protocol }),
    );
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterEach(async () => {
    for (const e of extra.splice(0)) await e.stop();
  });

  afterAll(async () => {
    await envoy?.stop();
    await cp?.stop();
    await a?.close();
    await b?.close();
  });

  it("receives listener, route, cluster and endpoints and serves traffic", async () => {
    expect(await envoy.listeners()).toEqual(["edge/http"]);
    expect((await envoy.routeConfigs()).map((r) => r.name)).toEqual(["edge/http"]);
    expect(await envoy.clusters()).toEqual(["svc-a"]);
    await waitFor(async () => (await envoy.endpoints("svc-a")).includes(`127.0.0.1:${a.port}`) || undefined, {
      what: "svc-a endpoints",
    });
    const res = await expectServed("/a/hello", (s) => s === 200);
    expect(res.upstream).toBe("svc-a");
    const node = cp.cp.xds.fleet.get(`edge-${protocol}`)!;
    expect(node.protocol).toBe(protocol);
    expect(node.version).toBe(envoy.binary.version);
    for (const t of [TypeUrl.Cluster, TypeUrl.Endpoint, TypeUrl.Listener, TypeUrl.Route]) {
      expect(node.types[t]?.ackedVersion, t).toBeTruthy();
    }
    await waitFor(
      () =>
        cp.cp.xds.fleet.get(`edge-${protocol}`)?.appliedConfigRevision ===
          cp.cp.publisher.current?.revision || undefined,
      {
        what: "node to report the config revision applied",
      },
    );
  });

  it("follows config changes: a route added, endpoints moved, a route removed", async () => {
    await cp.update(
      config([...base, { name: "b", gateway: "edge", match: { pathPrefix: "/b" }, upstream: "svc-b" }]),
    );
    expect((await expectServed("/b/x", (s) => s === 200)).upstream).toBe("svc-b");

    // svc-a's endpoint now points at b's server: same route, new endpoints (EDS only).
    await cp.update(
      config(
        [...base, { name: "b", gateway: "edge", match: { pathPrefix: "/b" }, upstream: "svc-b" }],
        b.port,
      ),
    );
    await expectServed("/a/x", (s, u) => s === 200 && u === "svc-b");

    await cp.update(config(base));
    await expectServed("/b/x", (s) => s === 404);
    expect(await envoy.clusters()).toEqual(["svc-a"]);
    await expectServed("/a/x", (s, u) => s === 200 && u === "svc-a");
  });

  it("records a NACK with Envoy's text, does not re-send it, and Envoy keeps serving", async () => {
    const nodeId = `edge-${protocol}`;
    const rejectedBefore = (await envoy.stat("http.edge_http.rds.edge/http.update_rejected")) ?? 0;
    // JavaScript accepts a look-behind; RE2, and so Envoy, does not.
    await cp.update(
      config([
        ...base,
        { name: "lookbehind", gateway: "edge", match: { pathRegex: "/(?<=x)y" }, upstream: "svc-b" },
      ]),
    );
    const nack = await waitFor(() => cp.cp.xds.fleet.get(nodeId)?.types[TypeUrl.Route]?.lastNack, {
      what: "the NACK to be recorded",
      timeoutMs: 10_000,
    });
    expect(nack.message).toMatch(/regex|RE2|invalid/i);
    await envoy.waitForStat(
      "http.edge_http.rds.edge/http.update_rejected",
      (v) => v === rejectedBefore + 1,
      "RDS rejection",
    );
    // Give a re-send loop time to show itself: the count must not grow.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await envoy.stat("http.edge_http.rds.edge/http.update_rejected")).toBe(rejectedBefore + 1);
    expect(cp.cp.xds.fleet.get(nodeId)!.types[TypeUrl.Route]!.lastNack!.nonce).toBe(nack.nonce);
    // The previous routes still work.
    expect((await expectServed("/a/x", (s) => s === 200)).upstream).toBe("svc-a");
    const nacks = await cp.cp.registry.getSingleMetric("portico_xds_nacks_total")!.get();
    expect(nacks.values.find((v) => v.labels.type === "RouteConfiguration")!.value).toBeGreaterThanOrEqual(1);

    // A fixed config is accepted again.
    await cp.update(config(base));
    await waitFor(
      () => {
        const n = cp.cp.xds.fleet.get(nodeId);
        return n?.appliedConfigRevision === cp.cp.publisher.current?.revision || undefined;
      },
      { what: "the fixed config to be applied", timeoutMs: 10_000 },
    );
  });

  it("refuses a bad edit of the config file with the field and reason, and keeps serving the last good config", async () => {
    const revision = cp.cp.publisher.current?.revision;
    cp.writeRaw("gateways: [ { name: edge, listeners: [ { name: http, port: 99999 } ] } ]\nroutes: []\n");
    const status = await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${cp.cp.adminPort}/api/v1/status`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        });
        const body = (await res.json()) as {
          config: { lastRejectedFile?: { details: { field: string }[] } };
        };
        return body.config.lastRejectedFile;
      },
      { what: "the bad edit to be reported" },
    );
    expect(status.details.map((d) => d.field)).toContain("gateways[0].listeners[0].port");
    expect(cp.cp.publisher.current?.revision).toBe(revision);
    expect((await expectServed("/a/x", (s) => s === 200)).upstream).toBe("svc-a");
    cp.writeRaw("routes: [ {");
    await new Promise((r) => setTimeout(r, 200));
    expect((await get("/a/x")).status).toBe(200);
    await cp.update(config(base));
  });

  it("keeps serving while the control plane restarts, reconnects, and ends on the same config", async () => {
    const versions = async () => {
      const dump = await envoy.configDump();
      const listeners = dump.configs.find((c: any) => c["@type"].endsWith("ListenersConfigDump"));
      return listeners.dynamic_listeners.map((l: any) => l.active_state.version_info);
    };
    const before = await versions();
    let failures = 0;
    let sent = 0;
    let running = true;
    const load = (async () => {
      while (running) {
        sent++;
        const res = await get("/a/x").catch(() => undefined);
        if (res?.status !== 200) failures++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    await cp.stop();
    await new Promise((r) => setTimeout(r, 500));
    await cp.restart();
    await waitFor(() => cp.cp.xds.fleet.get(`edge-${protocol}`)?.appliedRevision || undefined, {
      what: "Envoy to reconnect and apply the config",
      timeoutMs: 15_000,
    });
    running = false;
    await load;
    expect(sent).toBeGreaterThan(10);
    expect(failures).toBe(0);
    expect(await versions()).toEqual(before);
    // And the new control plane drives it.
    await cp.update(
      config([...base, { name: "b", gateway: "edge", match: { pathPrefix: "/b" }, upstream: "svc-b" }]),
    );
    expect((await expectServed("/b/x", (s) => s === 200)).upstream).toBe("svc-b");
    await cp.update(config(base));
  });

  it("adds an upstream and a route to it without a 503, over an xDS connection with latency", async () => {
    const fresh = await startHttpUpstream("svc-new");
    const proxy = await startDelayingProxy(cp.xdsPort, 150);
    try {
      const slow = track(
        await startEnvoy({ nodeId: `web-slow-${protocol}`, group: "bff-web", xdsPort: proxy.port, protocol }),
      );
      extra.push(slow);
      await slow.waitReady({ timeoutMs: 20_000 });
      await expectServed("/new/x", (s, u) => s === 200 && u === "svc-b", webPort);

      const statuses = new Map<number, number>();
      let moved = 0;
      let stop = false;
      const loop = (async () => {
        const deadline = Date.now() + 15_000;
        while (!stop && Date.now() < deadline) {
          const res = await get("/new/x", webPort).catch(() => undefined);
          if (!res) continue;
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.headers["x-upstream"] === "svc-new" && ++moved >= 50) return;
        }
      })();
      const next = config([
        ...base,
        { name: "new", gateway: "bff-web", match: { pathPrefix: "/new" }, upstream: "svc-new" },
      ]);
      next.upstreams!.push({ name: "svc-new", endpoints: [{ host: "127.0.0.1", port: fresh.port }] });
      await cp.update(next);
      await loop;
      stop = true;
      expect(moved).toBeGreaterThanOrEqual(50);
      // Envoy got the new cluster's endpoints before the route to it: never "no healthy upstream".
      expect(statuses.get(503) ?? 0).toBe(0);
      expect([...statuses.keys()]).toEqual([200]);
    } finally {
      await cp.update(config(base));
      await proxy.close();
      await fresh.close();
    }
  });

  it("serves two gateway groups different routes from one control plane", async () => {
    const web = track(
      await startEnvoy({ nodeId: `web-${protocol}`, group: "bff-web", xdsPort: cp.xdsPort, protocol }),
    );
    extra.push(web);
    await web.waitReady({ timeoutMs: 20_000 });
    expect((await expectServed("/zzz", (s) => s === 200, webPort)).upstream).toBe("svc-b");
    expect(await web.listeners()).toEqual(["bff-web/http"]);
    expect(await web.clusters()).toEqual(["svc-b"]);
    // The edge Envoy has no listener on the web port and no route for /zzz.
    expect(await envoy.listeners()).toEqual(["edge/http"]);
    await expectServed("/zzz", (s) => s === 404);
    expect(
      cp.cp.xds.fleet
        .list()
        .map((n) => n.group)
        .sort(),
    ).toEqual(["bff-web", "edge"]);
  });
});
