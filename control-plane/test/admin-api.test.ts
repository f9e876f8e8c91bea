import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { READ_TOKEN, startAdmin, type AdminHandle } from "@portico/testing";

let api: AdminHandle;

beforeAll(async () => {
  api = await startAdmin();
});
afterAll(async () => {
  await api?.stop();
});

const gateway = { name: "edge", listeners: [{ name: "http", port: 18080, address: "127.0.0.1" }] };
const upstream = (name: string, port = 8080) => ({ name, endpoints: [{ host: "127.0.0.1", port }] });
const route = (name: string, up: string, prefix = `/${name}`) => ({
  name,
  gateway: "edge",
  match: { pathPrefix: prefix },
  upstream: up,
});

describe("admin API access", () => {
  it("refuses requests without a valid token, and writes with a read-only one", async () => {
    const none = await api.call("GET", "/api/v1/routes", { token: null });
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect(none.json).toMatchObject({ code: "unauthenticated" });
    expect((await api.call("GET", "/api/v1/routes", { token: "wrong" })).status).toBe(401);
    expect((await api.call("GET", "/api/v1/routes", { token: READ_TOKEN })).status).toBe(200);
    const write = await api.call("PUT", "/api/v1/upstreams/x", { body: upstream("x"), token: READ_TOKEN });
    expect(write.status).toBe(403);
    expect(write.json.code).toBe("forbidden");
  });

  it("cuts off a client that trickles its request headers, and keeps serving others", async () => {
    const slow = await startAdmin({ adminHeadersTimeoutMs: 1_000 });
    try {
      const socket = net.connect(slow.cp.adminPort, "127.0.0.1");
      let answer = "";
      socket.on("data", (b) => (answer += b.toString()));
      // The server answers 408 and closes; a byte of the trickle still in flight then meets a reset.
      socket.on("error", () => {});
      const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())));
      await new Promise((r) => socket.once("connect", r));
      const started = Date.now();
      socket.write("GET /api/v1/status HTTP/1.1\r\nHost: x\r\n");
      // One header byte every 200 ms: the headers never end.
      const trickle = setInterval(() => socket.writable && socket.write("x"), 200);
      const at = await closed;
      clearInterval(trickle);
      expect(answer).toMatch(/^HTTP\/1\.1 408/);
      // Cut off by the headers deadline (1 s here), long before the trickle could finish.
      expect(at - started).toBeLessThan(10_000);
      expect((await slow.call("GET", "/api/v1/status")).status).toBe(200);
    } finally {
      await slow.stop();
    }
  });

  it("serves health, readiness, metrics and the OpenAPI document without a token", async () => {
    expect((await api.call("GET", "/healthz", { token: null })).status).toBe(200);
    expect((await api.call("GET", "/readyz", { token: null })).status).toBe(200);
    expect((await api.call("GET", "/metrics", { token: null })).text).toMatch(/portico_xds_responses_total/);
    const doc = (await api.call("GET", "/openapi.json", { token: null })).json;
    expect(doc.openapi).toBe("3.1.0");
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        "/api/v1/routes/{name}",
        "/api/v1/config",
        "/api/v1/status",
        "/api/v1/fleet",
        "/api/v1/fleet/{node}",
      ]),
    );
    expect(doc.components.schemas.Route.properties.match).toBeDefined();
    // Each secret field says it is written only, and read back as a fingerprint.
    const secret = (s: any) => [s.anyOf[0].writeOnly, s.anyOf[1].$ref];
    const redacted = [true, "#/components/schemas/RedactedSecret"];
    const schemas = doc.components.schemas;
    expect(secret(schemas.Certificate.properties.privateKeyPem)).toEqual(redacted);
    expect(secret(schemas.Certificate.properties.sessionTicketKeys.items)).toEqual(redacted);
    expect(secret(schemas.JwtProvider.properties.jwks.properties.keys.items.properties.k)).toEqual(redacted);
    expect(secret(schemas.OauthProvider.properties.clientSecret)).toEqual(redacted);
    expect(
      secret(schemas.Config.properties.gateways.items.properties.aggregator.properties.partsToken),
    ).toEqual(redacted);
    expect(schemas.RedactedSecret.required).toEqual(["redacted", "sha256"]);
  });
});

describe("resources", () => {
  it("creates, reads, replaces and deletes, with ETags and Location", async () => {
    expect((await api.call("PUT", "/api/v1/gateways/edge", { body: gateway })).status).toBe(201);
    const created = await api.call("POST", "/api/v1/upstreams", { body: upstream("users") });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toBe("/api/v1/upstreams/users");
    const etag = created.headers.get("etag")!;
    expect(etag).toMatch(/^"[0-9a-f]+"$/);
    const got = await api.call("GET", "/api/v1/upstreams/users");
    expect(got.json).toMatchObject({ name: "users", protocol: "http1", loadBalancing: "round_robin" });
    expect(got.headers.get("etag")).toBe(etag);
    const replaced = await api.call("PUT", "/api/v1/upstreams/users", {
      body: upstream("users", 9090),
      headers: { "if-match": etag },
    });
    expect(replaced.status).toBe(200);
    expect(replaced.headers.get("etag")).not.toBe(etag);
    expect((await api.call("POST", "/api/v1/upstreams", { body: upstream("users") })).status).toBe(409);
    expect((await api.call("DELETE", "/api/v1/upstreams/users")).status).toBe(204);
    expect((await api.call("GET", "/api/v1/upstreams/users")).status).toBe(404);
    expect((await api.call("DELETE", "/api/v1/upstreams/users")).status).toBe(404);
  });

  it("lets exactly one of two writers with the same ETag win", async () => {
    await api.call("PUT", "/api/v1/upstreams/shared", { body: upstream("shared") });
    const etag = (await api.call("GET", "/api/v1/upstreams/shared")).headers.get("etag")!;
    const [a, b] = await Promise.all([
      api.call("PUT", "/api/v1/upstreams/shared", {
        body: upstream("shared", 1001),
        headers: { "if-match": etag },
      }),
      api.call("PUT", "/api/v1/upstreams/shared", {
        body: upstream("shared", 1002),
        headers: { "if-match": etag },
      }),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 412]);
    const loser = a.status === 412 ? a : b;
    expect(loser.json.code).toBe("precondition_failed");
    const winner = a.status === 200 ? 1001 : 1002;
    expect((await api.call("GET", "/api/v1/upstreams/shared")).json.endpoints[0].port).toBe(winner);
    // If-None-Match: * is create-only.
    expect(
      (
        await api.call("PUT", "/api/v1/upstreams/shared", {
          body: upstream("shared"),
          headers: { "if-none-match": "*" },
        })
      ).status,
    ).toBe(412);
  });

  it("keeps references whole: no route to a missing upstream, no deleting an upstream in use", async () => {
    const bad = await api.call("PUT", "/api/v1/routes/orphan", { body: route("orphan", "nope") });
    expect(bad.status).toBe(422);
    expect(bad.json.details).toEqual([{ field: "upstream", reason: "no upstream named 'nope'" }]);
    await api.call("PUT", "/api/v1/upstreams/orders", { body: upstream("orders") });
    expect((await api.call("PUT", "/api/v1/routes/orders", { body: route("orders", "orders") })).status).toBe(
      201,
    );
    const inUse = await api.call("DELETE", "/api/v1/upstreams/orders");
    expect(inUse.status).toBe(409);
    expect(inUse.json.code).toBe("in_use");
    expect(inUse.json.details[0].reason).toMatch(/route 'orders'/);
    expect((await api.call("GET", "/api/v1/upstreams/orders")).status).toBe(200);
  });

  it("answers bad input with the field and the reason, and stores nothing", async () => {
    const before = (await api.call("GET", "/api/v1/revisions")).json.items[0].number;
    const cases: [string, Parameters<AdminHandle["call"]>[2], number, string][] = [
      ["unknown field", { body: { ...route("r1", "orders"), upstrem: "x" } }, 422, "upstrem"],
      [
        "bad regex",
        { body: { ...route("r2", "orders"), match: { pathRegex: "/(?=x)" } } },
        422,
        "match.pathRegex",
      ],
      [
        "bad header name",
        {
          body: {
            ...route("r3", "orders"),
            match: { pathPrefix: "/x", headers: [{ name: "bad header", exact: "1" }] },
          },
        },
        422,
        "match.headers[0].name",
      ],
      ["two actions", { body: { ...route("r4", "orders"), directResponse: { status: 200 } } }, 422, "(root)"],
      ["missing gateway", { body: { ...route("r5", "orders"), gateway: "nowhere" } }, 422, "gateway"],
      ["name mismatch", { body: route("other", "orders") }, 422, "name"],
    ];
    for (const [what, opts, status, field] of cases) {
      const res = await api.call(
        "PUT",
        `/api/v1/routes/${what === "name mismatch" ? "r6" : (opts!.body as { name: string }).name}`,
        opts,
      );
      expect(res.status, what).toBe(status);
      expect(
        res.json.details.map((d: { field: string }) => d.field),
        what,
      ).toContain(field);
    }
    const malformed = await api.call("PUT", "/api/v1/routes/x", { raw: "{not json" });
    expect(malformed.status).toBe(400);
    expect(malformed.json.code).toBe("malformed_json");
    expect(malformed.text).not.toMatch(/at .*\.js/);
    expect(
      (await api.call("PUT", "/api/v1/routes/x", { raw: "name: x", contentType: "text/plain" })).status,
    ).toBe(415);
    const huge = await api.call("PUT", "/api/v1/routes/x", {
      raw: JSON.stringify({ name: "x", pad: "y".repeat(2_000_000) }),
    });
    expect(huge.status).toBe(413);
    expect((await api.call("GET", "/api/v1/widgets")).status).toBe(404);
    const after = (await api.call("GET", "/api/v1/revisions")).json.items[0].number;
    expect(after).toBe(before);
  });

  it("checks a write's query before writing, and answers unknown methods with 405 and Allow", async () => {
    const before = (await api.call("GET", "/api/v1/revisions")).json.items[0].number;
    const bad = await api.call("PUT", "/api/v1/upstreams/q?wait=soon", { body: upstream("q") });
    expect(bad.status).toBe(400);
    expect(bad.json.details).toEqual([{ field: "wait", reason: "unknown value" }]);
    expect(
      (await api.call("PUT", "/api/v1/upstreams/q?wait=applied&timeout=later", { body: upstream("q") }))
        .status,
    ).toBe(400);
    expect((await api.call("PUT", "/api/v1/config?dryRun=maybe", { raw: "{}" })).status).toBe(400);
    expect((await api.call("GET", "/api/v1/upstreams/q")).status).toBe(404);
    expect((await api.call("GET", "/api/v1/revisions")).json.items[0].number).toBe(before);
    const trace = await api.call("PATCH", "/api/v1/routes/x", { body: {} });
    expect(trace.status).toBe(405);
    expect(trace.headers.get("allow")).toBe("GET, PUT, DELETE");
    expect((await api.call("DELETE", "/api/v1/revisions/1")).headers.get("allow")).toBe("GET");
    expect((await api.call("GET", "/api/v1/routes?limit=abc")).status).toBe(400);
    expect((await api.call("GET", "/api/v1/routes?offset=-1")).status).toBe(400);
  });

  it("lists with pagination and filters", async () => {
    for (let i = 0; i < 5; i++)
      await api.call("PUT", `/api/v1/routes/page-${i}`, { body: route(`page-${i}`, "orders") });
    const page = await api.call("GET", "/api/v1/routes?limit=2&offset=1&upstream=orders");
    expect(page.json.total).toBe(6);
    expect(page.json.items.map((r: { name: string }) => r.name)).toEqual(["page-0", "page-1"]);
    expect(page.json.next).toBe("?offset=3&limit=2");
    expect((await api.call("GET", "/api/v1/routes?gateway=nowhere")).json.total).toBe(0);
  });

  it("creates an API key and shows its plaintext only once", async () => {
    await api.call("PUT", "/api/v1/consumers/acme", { body: { name: "acme", plan: "gold" } });
    const created = await api.call("POST", "/api/v1/apiKeys", { body: { name: "acme-1", consumer: "acme" } });
    expect(created.status).toBe(201);
    expect(created.json.key).toMatch(/^pk_/);
    expect(created.json.sha256).toHaveLength(64);
    const again = await api.call("GET", "/api/v1/apiKeys/acme-1");
    expect(again.json.key).toBeUndefined();
    expect(again.json.prefix).toBe(created.json.key.slice(0, 10));
    expect((await api.call("DELETE", "/api/v1/consumers/acme")).status).toBe(409);
  });
});

describe("whole config, revisions and rollback", () => {
  it("dry-runs a diff without storing, applies, and exports YAML that re-imports to the same state", async () => {
    const exported = await api.call("GET", "/api/v1/config");
    expect(exported.headers.get("content-type")).toMatch(/yaml/);
    const config = parse(exported.text);
    const revision = Number(exported.headers.get("etag")!.match(/rev-(\d+)/)![1]);

    config.routes = config.routes.filter((r: { name: string }) => r.name !== "page-4");
    config.upstreams.push(upstream("extra"));
    const { stringify } = await import("yaml");
    const dry = await api.call("PUT", "/api/v1/config?dryRun=true", {
      raw: stringify(config),
      contentType: "application/yaml",
    });
    expect(dry.status).toBe(200);
    expect(dry.json.changes).toEqual(
      expect.arrayContaining([
        { kind: "routes", name: "page-4", op: "delete" },
        { kind: "upstreams", name: "extra", op: "create" },
      ]),
    );
    expect((await api.call("GET", "/api/v1/upstreams/extra")).status).toBe(404);

    const stale = await api.call("PUT", "/api/v1/config", {
      raw: stringify(config),
      contentType: "application/yaml",
      headers: { "if-match": `"rev-${revision - 1}"` },
    });
    expect(stale.status).toBe(412);
    const applied = await api.call("PUT", "/api/v1/config", {
      raw: stringify(config),
      contentType: "application/yaml",
      headers: { "if-match": `"rev-${revision}"` },
    });
    expect(applied.status).toBe(200);
    expect(applied.json.revision).toBe(revision + 1);

    const roundTrip = await api.call("GET", "/api/v1/config");
    const again = await api.call("PUT", "/api/v1/config", {
      raw: roundTrip.text,
      contentType: "application/yaml",
    });
    expect(again.json.changed).toBe(false);
    expect(again.json.changes).toEqual([]);
  });

  it("refuses malformed YAML with the line", async () => {
    const res = await api.call("PUT", "/api/v1/config", {
      raw: "routes: [\n  - name: a\n  bad",
      contentType: "application/yaml",
    });
    expect(res.status).toBe(400);
    expect(res.json.details[0].field).toMatch(/^line \d+/);
  });

  it("rolls back to an earlier revision as a new revision", async () => {
    const history = (await api.call("GET", "/api/v1/revisions")).json.items;
    expect(history.length).toBeGreaterThan(3);
    const target = history[2].number;
    const targetConfig = (await api.call("GET", `/api/v1/revisions/${target}`)).json.config;
    const res = await api.call("POST", `/api/v1/revisions/${target}/rollback`);
    expect(res.status).toBe(200);
    expect(res.json.revision).toBe(history[0].number + 1);
    const now = (await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } })).json;
    expect(now).toEqual(targetConfig);
    expect((await api.call("POST", "/api/v1/revisions/99999/rollback")).status).toBe(404);
    const latest = (await api.call("GET", "/api/v1/revisions")).json.items[0];
    expect(latest.message).toBe(`rollback to revision ${target}`);
    expect(latest.author).toBe("ci");
  });

  it("reports the fleet (none yet) and the config revision", async () => {
    const status = await api.call("GET", "/api/v1/status", { token: READ_TOKEN });
    expect(status.json.config.store).toBe("file");
    expect(status.json.config.revision).toBeGreaterThan(0);
    expect(status.json.nodes).toEqual([]);
  });
});

describe("validation by Envoy itself (--validate-with-envoy)", () => {
  it("refuses before commit what Envoy would refuse, with Envoy's reason, and accepts the rest", async () => {
    // Semantic checks off, so that only Envoy stands between the write and the store.
    const strict = await startAdmin({ validateWithEnvoy: true, skipSemanticChecks: true });
    try {
      await strict.call("PUT", "/api/v1/gateways/edge", { body: gateway });
      await strict.call("PUT", "/api/v1/upstreams/u", { body: upstream("u") });
      const ok = await strict.call("PUT", "/api/v1/routes/ok", { body: route("ok", "u") });
      expect(ok.status).toBe(201);
      const bad = await strict.call("PUT", "/api/v1/routes/bad", {
        body: { name: "bad", gateway: "edge", match: { pathRegex: "/(?<=a)b" }, upstream: "u" },
      });
      expect(bad.status).toBe(422);
      expect(bad.json.code).toBe("rejected_by_envoy");
      expect(bad.json.details[0].field).toBe("gateways.edge");
      expect(bad.json.details[0].reason).toMatch(/Envoy refuses it: .*(regex|RE2|invalid)/i);
      expect((await strict.call("GET", "/api/v1/routes/bad")).status).toBe(404);
    } finally {
      await strict.stop();
    }
  });
});
