import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { porticoProtoDir } from "@portico/contract";
import {
  freePort,
  httpRequest,
  startAdmin,
  startEnvoy,
  startHttpUpstream,
  type AdminHandle,
  type EnvoyProcess,
  type HttpUpstream,
} from "../harness/index.js";
import { useEnvoyLogs } from "../harness/logs.js";
import {
  BOOKSTORE_PROTO,
  BOOKSTORE_SERVICE,
  startGrpcBookstore,
  type GrpcBookstore,
} from "../harness/grpc-bookstore.js";

const bookstoreSource = fs.readFileSync(path.join(porticoProtoDir(), BOOKSTORE_PROTO), "utf8");

/** REST/JSON in, gRPC to the upstream, JSON out: configured through the admin API, done by a real Envoy. */
describe("REST to gRPC transcoding", () => {
  const track = useEnvoyLogs();
  let api: AdminHandle;
  let envoy: EnvoyProcess;
  let bookstore: GrpcBookstore;
  let web: HttpUpstream;
  let port: number;
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  const json = { "content-type": "application/json" };

  beforeAll(async () => {
    port = await freePort();
    bookstore = await startGrpcBookstore();
    web = await startHttpUpstream("web");
    api = await startAdmin();
    const put = async (p: string, body: unknown) => {
      const res = await api.call("PUT", p, { body });
      expect(res.status, res.text).toBe(201);
    };
    await put("/api/v1/gateways/edge", {
      name: "edge",
      listeners: [{ name: "http", port, address: "127.0.0.1" }],
    });
    await put("/api/v1/upstreams/bookstore", {
      name: "bookstore",
      protocol: "grpc",
      endpoints: [{ host: "127.0.0.1", port: bookstore.port }],
    });
    await put("/api/v1/upstreams/web", { name: "web", endpoints: [{ host: "127.0.0.1", port: web.port }] });
    await put("/api/v1/protoDescriptors/bookstore", { files: { [BOOKSTORE_PROTO]: bookstoreSource } });
    await put("/api/v1/routes/books", {
      gateway: "edge",
      match: { pathPrefix: "/v1/books" },
      upstream: "bookstore",
      grpcTranscode: { descriptors: "bookstore", services: [BOOKSTORE_SERVICE] },
    });
    // The same service for callers that ask for it, letting unknown fields through as the
    // transcoder does; its condition puts it before the route above.
    await put("/api/v1/routes/books-lenient", {
      gateway: "edge",
      match: { pathPrefix: "/v1/books", headers: [{ name: "x-lenient", present: true }] },
      upstream: "bookstore",
      grpcTranscode: { descriptors: "bookstore", services: [BOOKSTORE_SERVICE], allowUnknownFields: true },
    });
    await put("/api/v1/routes/site", { gateway: "edge", match: { pathPrefix: "/" }, upstream: "web" });
    envoy = track(await startEnvoy({ nodeId: "edge-t", group: "edge", xdsPort: api.cp.xdsPort }));
    await envoy.waitReady({ timeoutMs: 20_000 });
  });

  afterAll(async () => {
    await envoy?.stop();
    await api?.stop();
    await bookstore?.close();
    await web?.close();
  });

  it("answers GET /v1/books/1 from the gRPC service, as JSON", async () => {
    const res = await httpRequest(url("/v1/books/1"));
    expect(res.status, res.body).toBe(200);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json()).toEqual({
      id: "1",
      title: "The Left Hand of Darkness",
      author: "Ursula K. Le Guin",
      publishedYear: 1969,
      tags: ["sf"],
    });
    const call = bookstore.calls.at(-1)!;
    expect(call.method).toBe("GetBook");
    expect(call.request).toEqual({ id: 1 });
    // The REST request became a gRPC call (grpc-js serves nothing else); Envoy notes what it was.
    expect(call.metadata).toMatchObject({
      "x-envoy-original-method": "GET",
      "x-envoy-original-path": "/v1/books/1",
    });
  });

  it("turns a JSON POST into CreateBook, the body into the request's book", async () => {
    const res = await httpRequest(url("/v1/books"), {
      method: "POST",
      headers: json,
      body: JSON.stringify({
        title: "Parable of the Sower",
        author: "Octavia E. Butler",
        publishedYear: 1993,
      }),
    });
    expect(res.status, res.body).toBe(200);
    const created = res.json<{ id: string; title: string }>();
    expect(created).toMatchObject({ title: "Parable of the Sower", publishedYear: 1993 });
    expect(bookstore.calls.at(-1)!.method).toBe("CreateBook");
    // And the new book is there to read back.
    const back = await httpRequest(url(`/v1/books/${created.id}`));
    expect(back.json()).toMatchObject({ id: created.id, author: "Octavia E. Butler" });
  });

  it("maps query parameters to request fields", async () => {
    const res = await httpRequest(url("/v1/books?author=Octavia%20E.%20Butler&pageSize=1"));
    expect(res.status, res.body).toBe(200);
    expect(bookstore.calls.at(-1)!.request).toEqual({ author: "Octavia E. Butler", page_size: 1 });
    expect(res.json<{ books: unknown[] }>().books).toEqual([
      { id: "3", title: "Kindred", author: "Octavia E. Butler", publishedYear: 1979 },
    ]);
  });

  it("answers an unknown id with 404 and the gRPC status as JSON", async () => {
    const res = await httpRequest(url("/v1/books/999"));
    expect(res.status).toBe(404);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json()).toEqual({ code: 5, message: "no book with id 999" });
  });

  it("refuses a query parameter no field takes with 400, before the service", async () => {
    const before = bookstore.calls.length;
    const res = await httpRequest(url("/v1/books?colour=red"));
    expect(res.status).toBe(400);
    // In the JSON shape of the gateway's other errors, with the transcoder's reason.
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json()).toEqual({
      code: "invalid_request",
      message: "the request is not valid",
      detail: 'Could not find field "colour" in the type "portico.sample.v1.ListBooksRequest".',
      request_id: res.headers["x-request-id"],
    });
    expect(bookstore.calls.length).toBe(before);
  });

  it("refuses a JSON body naming a field the message does not have, with a JSON error, before the service", async () => {
    const before = bookstore.calls.length;
    const res = await httpRequest(url("/v1/books"), {
      method: "POST",
      headers: json,
      body: JSON.stringify({ title: "Kindred", nope: 1 }),
    });
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toBe("application/json");
    expect(res.json()).toEqual({
      code: "invalid_request",
      message: "the request is not valid",
      detail:
        'unknown field "nope" in portico.sample.v1.Book: the request body names a field the message does not have',
      request_id: res.headers["x-request-id"],
    });
    expect(bookstore.calls.length).toBe(before);
    // Both spellings of a field are the field's.
    const spelled = await httpRequest(url("/v1/books"), {
      method: "POST",
      headers: json,
      body: JSON.stringify({ title: "Dawn", published_year: 1987, tags: ["sf"] }),
    });
    expect(spelled.status, spelled.body).toBe(200);
  });

  it("lets unknown fields through on a route that allows them, as the transcoder does", async () => {
    const res = await httpRequest(url("/v1/books"), {
      method: "POST",
      headers: { ...json, "x-lenient": "1" },
      body: JSON.stringify({ title: "Imago", nope: 1 }),
    });
    expect(res.status, res.body).toBe(200);
    expect(bookstore.calls.at(-1)!.request).toMatchObject({ book: { title: "Imago" } });
  });

  it("answers REST clients without gRPC's own headers", async () => {
    for (const p of ["/v1/books/1", "/v1/books/999"]) {
      const res = await httpRequest(url(p));
      expect(
        Object.keys(res.headers).filter((h) => h.startsWith("grpc-")),
        p,
      ).toEqual([]);
    }
  });

  it("answers a REST call no method takes with 404 rather than passing it to the gRPC upstream", async () => {
    const before = bookstore.calls.length;
    const res = await httpRequest(url("/v1/books/1/reviews"));
    expect(res.status).toBe(404);
    expect(bookstore.calls.length).toBe(before);
  });

  it("leaves other routes alone: their REST paths reach their HTTP upstream as they are", async () => {
    const res = await httpRequest(url("/v2/books/1"));
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ upstream: "web", method: "GET", path: "/v2/books/1" });
  });

  it("refuses a bad .proto upload with the file and the reason, and stores nothing", async () => {
    const before = await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } });
    const res = await api.call("PUT", "/api/v1/protoDescriptors/broken", {
      body: {
        files: {
          "shop.proto": 'syntax = "proto3";\npackage shop;\nmessage Item {\n  Price price = 1;\n}\n',
          "bad.proto": 'syntax = "proto3";\nmessage {\n}\n',
        },
      },
    });
    expect(res.status).toBe(422);
    expect(res.json.details).toEqual([
      { field: 'files["bad.proto"]', reason: "line 2: illegal type name '{'" },
    ]);
    const unknown = await api.call("PUT", "/api/v1/protoDescriptors/broken", {
      body: {
        files: { "shop.proto": 'syntax = "proto3";\npackage shop;\nmessage Item {\n  Price price = 1;\n}\n' },
      },
    });
    expect(unknown.status).toBe(422);
    expect(unknown.json.details).toEqual([
      { field: 'files["shop.proto"]', reason: "unknown type 'Price' (in shop.Item)" },
    ]);
    const after = await api.call("GET", "/api/v1/config", { headers: { accept: "application/json" } });
    expect(after.headers.get("etag")).toBe(before.headers.get("etag"));
    expect((await api.call("GET", "/api/v1/protoDescriptors/broken")).status).toBe(404);
  });

  it("refuses a route naming a service the descriptors do not hold", async () => {
    const res = await api.call("PUT", "/api/v1/routes/books-v2", {
      body: {
        gateway: "edge",
        match: { pathPrefix: "/v2/shelves" },
        upstream: "bookstore",
        grpcTranscode: { descriptors: "bookstore", services: ["portico.sample.v1.Shelves"] },
      },
    });
    expect(res.status).toBe(422);
    expect(res.json.details).toEqual([
      {
        field: "grpcTranscode.services[0]",
        reason:
          "proto descriptors 'bookstore' have no service 'portico.sample.v1.Shelves' (services: portico.sample.v1.Bookstore)",
      },
    ]);
  });
});
