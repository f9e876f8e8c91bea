import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { porticoProtoDir } from "@portico/contract";
import { compileProtoFiles } from "../src/descriptors/compile.js";
import { parseTemplate } from "../src/descriptors/http-template.js";
import { inspectDescriptorSet } from "../src/descriptors/inspect.js";
import { decodeFileDescriptorSet, encodeFileDescriptorSet } from "../src/descriptors/wire.js";
import { ConfigError } from "../src/model/errors.js";
import { buildDescriptors, MAX_DESCRIPTOR_BYTES } from "../src/model/grpc-transcode.js";
import type { ConfigInput } from "../src/model/schema.js";
import { validateConfig } from "../src/model/validate.js";
import { translate } from "../src/translate/translate.js";
import { TypeUrl } from "../src/xds/types.js";

const BOOKSTORE = "portico/sample/v1/bookstore.proto";
const bookstore = fs.readFileSync(path.join(porticoProtoDir(), BOOKSTORE), "utf8");

function compiled(files: Record<string, string>) {
  const out = compileProtoFiles(files);
  if (!out.ok) throw new Error(JSON.stringify(out.problems));
  return decodeFileDescriptorSet(out.bytes);
}

function problems(files: Record<string, string>) {
  const out = compileProtoFiles(files);
  if (out.ok) throw new Error("expected problems");
  return out.problems;
}

const p3 = (body: string) => `syntax = "proto3";\n${body}`;

describe("compiling .proto files into a FileDescriptorSet", () => {
  it("holds every imported file, each after its imports, with the http rules as method options", () => {
    const set = compiled({ [BOOKSTORE]: bookstore });
    expect(set.file.map((f) => f.name)).toEqual([
      "google/api/http.proto",
      "google/protobuf/descriptor.proto",
      "google/api/annotations.proto",
      "google/protobuf/empty.proto",
      BOOKSTORE,
    ]);
    const file = set.file.at(-1)!;
    expect(file).toMatchObject({
      package: "portico.sample.v1",
      dependency: ["google/api/annotations.proto", "google/protobuf/empty.proto"],
      syntax: "proto3",
    });
    const methods = file.service![0]!.method!;
    expect(methods.map((m) => [m.name, m.input_type, m.output_type])).toEqual([
      ["GetBook", ".portico.sample.v1.GetBookRequest", ".portico.sample.v1.Book"],
      ["CreateBook", ".portico.sample.v1.CreateBookRequest", ".portico.sample.v1.Book"],
      ["ListBooks", ".portico.sample.v1.ListBooksRequest", ".portico.sample.v1.ListBooksResponse"],
      ["DeleteBook", ".portico.sample.v1.GetBookRequest", ".google.protobuf.Empty"],
    ]);
    expect(methods[0]!.options).toMatchObject({ ".google.api.http": { get: "/v1/books/{id}" } });
    expect(methods[1]!.options).toMatchObject({ ".google.api.http": { post: "/v1/books", body: "book" } });
    // annotations.proto declares the extension the rules are read through.
    const annotations = set.file.find((f) => f.name === "google/api/annotations.proto")!;
    expect(annotations.extension).toEqual([
      expect.objectContaining({
        name: "http",
        number: 72295728,
        extendee: ".google.protobuf.MethodOptions",
        type_name: ".google.api.HttpRule",
      }),
    ]);
  });

  it("writes the rule's bytes as extension 72295728 of MethodOptions", () => {
    const out = compileProtoFiles({ [BOOKSTORE]: bookstore });
    expect(out.ok).toBe(true);
    // Tag (72295728 << 3 | 2) as a varint, then the HttpRule with get = "/v1/books/{id}".
    const tag = Buffer.from([0x82, 0xd3, 0xe4, 0x93, 0x02]);
    const rule = Buffer.concat([Buffer.from([0x12, 14]), Buffer.from("/v1/books/{id}")]);
    expect(Buffer.from((out as { bytes: Uint8Array }).bytes).includes(Buffer.concat([tag]))).toBe(true);
    expect(Buffer.from((out as { bytes: Uint8Array }).bytes).includes(rule)).toBe(true);
  });

  it("describes fields as protoc does: optional, maps, oneofs, nested and enum types, json names", () => {
    const set = compiled({
      "shop.proto": p3(`package shop;
message Item {
  message Price { int64 cents = 1; Currency currency = 2; }
  enum Currency { option allow_alias = true; EUR = 0; EURO = 0; USD = 1; }
  string item_id = 1;
  optional string note = 2;
  map<string, Price> price_by_region = 3;
  oneof stock { int32 count = 4; bool unlimited = 5; }
  repeated string tags = 6 [json_name = "labels"];
  reserved 10 to 12, 20;
  reserved "old";
}`),
    });
    const item = set.file.at(-1)!.message_type![0]!;
    const field = (n: string) => item.field!.find((f) => f.name === n)!;
    expect(field("item_id")).toMatchObject({
      type: "TYPE_STRING",
      json_name: "itemId",
      label: "LABEL_OPTIONAL",
    });
    // The synthetic oneof of a proto3 optional comes after the declared ones.
    expect(item.oneof_decl).toEqual([{ name: "stock" }, { name: "_note" }]);
    expect(field("note")).toMatchObject({ proto3_optional: true, oneof_index: 1 });
    expect(field("count")).toMatchObject({ oneof_index: 0 });
    expect(field("price_by_region")).toMatchObject({
      label: "LABEL_REPEATED",
      type: "TYPE_MESSAGE",
      type_name: ".shop.Item.PriceByRegionEntry",
    });
    expect(item.nested_type!.find((n) => n.name === "PriceByRegionEntry")).toMatchObject({
      options: { map_entry: true },
      field: [
        { name: "key", number: 1, type: "TYPE_STRING" },
        { name: "value", number: 2, type: "TYPE_MESSAGE", type_name: ".shop.Item.Price" },
      ],
    });
    expect(item.nested_type![0]!.field![1]).toMatchObject({
      type: "TYPE_ENUM",
      type_name: ".shop.Item.Currency",
    });
    expect(item.enum_type![0]).toMatchObject({ options: { allow_alias: true } });
    expect(field("tags").json_name).toBe("labels");
    expect(item.reserved_range).toEqual([
      { start: 10, end: 13 },
      { start: 20, end: 21 },
    ]);
    expect(item.reserved_name).toEqual(["old"]);
  });

  it("resolves names from the innermost scope outwards and through public imports", () => {
    const set = compiled({
      "a.proto": p3(`package acme.a;\nimport "b.proto";\nmessage A { acme.c.C c = 1; b.B b = 2; }`),
      "b.proto": p3(`package acme.b;\nimport public "c.proto";\nmessage B {}`),
      "c.proto": p3(`package acme.c;\nmessage C {}`),
    });
    const a = set.file.find((f) => f.name === "a.proto")!;
    expect(a.message_type![0]!.field!.map((f) => f.type_name)).toEqual([".acme.c.C", ".acme.b.B"]);
    expect(set.file.find((f) => f.name === "b.proto")!.public_dependency).toEqual([0]);
  });

  it("keeps proto2 defaults and extension ranges", () => {
    const set = compiled({
      "legacy.proto": `syntax = "proto2";
package legacy;
message Opts { optional int32 retries = 1 [default = 3]; optional Mode mode = 2 [default = FAST]; extensions 100 to max; }
enum Mode { SLOW = 0; FAST = 1; }
extend Opts { optional string tag = 100; }`,
    });
    const file = set.file[0]!;
    expect(file.syntax).toBeUndefined();
    expect(file.message_type![0]!.field).toEqual([
      expect.objectContaining({ name: "retries", default_value: "3" }),
      expect.objectContaining({ name: "mode", default_value: "FAST", type: "TYPE_ENUM" }),
    ]);
    expect(file.message_type![0]!.extension_range).toEqual([{ start: 100, end: 536_870_912 }]);
    expect(file.extension).toEqual([expect.objectContaining({ name: "tag", extendee: ".legacy.Opts" })]);
  });

  it("gives the same bytes for the same files", () => {
    const a = compileProtoFiles({ [BOOKSTORE]: bookstore });
    const b = compileProtoFiles({ [BOOKSTORE]: bookstore });
    expect(a.ok && b.ok && Buffer.from(a.bytes).equals(Buffer.from(b.bytes))).toBe(true);
  });
});

describe("refusing bad .proto files with the file and the reason", () => {
  it("a syntax error, with its line", () => {
    expect(problems({ "a.proto": 'syntax = "proto3";\n\nmessage A {\n  int32 = 1;\n}\n' })).toEqual([
      { file: "a.proto", reason: "line 4: illegal name '='" },
    ]);
  });

  it("an import that is neither uploaded nor provided", () => {
    expect(problems({ "a.proto": p3('import "acme/common.proto";') })).toEqual([
      {
        file: "a.proto",
        reason:
          'import "acme/common.proto" is neither in the upload nor one Portico provides (google/protobuf/*, google/api/*, google/rpc/*)',
      },
    ]);
  });

  it("an unknown type, and one from a file not imported", () => {
    expect(
      problems({
        "a.proto": p3("package a;\nmessage A { Missing m = 1; b.B b = 2; }"),
        "b.proto": p3("package b;\nmessage B {}"),
      }),
    ).toEqual([
      { file: "a.proto", reason: "unknown type 'Missing' (in a.A)" },
      {
        file: "a.proto",
        reason: `'b.B' is defined in b.proto, which this file does not import; add import "b.proto"`,
      },
    ]);
  });

  it("a method whose request type is a service", () => {
    expect(problems({ "a.proto": p3("package a;\nservice S { rpc Call(S) returns (S); }") })).toEqual([
      { file: "a.proto", reason: "'S' is a service, not a message" },
    ]);
  });

  it("a name defined twice across files", () => {
    expect(
      problems({
        "a.proto": p3("package shop;\nmessage Item {}"),
        "b.proto": p3("package shop;\nmessage Item {}"),
      }),
    ).toEqual([{ file: "b.proto", reason: "'shop.Item' is already defined in a.proto" }]);
  });

  it("an import cycle", () => {
    expect(
      problems({ "a.proto": p3('import "b.proto";'), "b.proto": p3('import "a.proto";') }).map(
        (p) => p.reason,
      ),
    ).toEqual(["import cycle: a.proto → b.proto → a.proto"]);
  });

  it("an http option without its import, or naming a field HttpRule does not have", () => {
    const svc = (imp: string, rule: string) =>
      p3(
        `package a;\n${imp}\nmessage M { string id = 1; }\nservice S { rpc Get(M) returns (M) { option (google.api.http) = { ${rule} }; } }`,
      );
    expect(problems({ "a.proto": svc("", 'get: "/v1/{id}"') })).toEqual([
      {
        file: "a.proto",
        reason: 'a.S.Get: option (google.api.http) needs import "google/api/annotations.proto"',
      },
    ]);
    expect(
      problems({ "a.proto": svc('import "google/api/annotations.proto";', 'gett: "/v1/{id}"') }),
    ).toEqual([
      { file: "a.proto", reason: "a.S.Get (google.api.http): google.api.HttpRule has no field 'gett'" },
    ]);
  });

  it("editions, which Envoy's protobuf would take but this compiler does not", () => {
    expect(problems({ "a.proto": 'edition = "2023";\nmessage A {}' })[0]!.reason).toMatch(
      /editions are not supported/,
    );
  });
});

describe("checking a FileDescriptorSet as Envoy will use it", () => {
  const annotated = (rule: string) =>
    p3(`package a;
import "google/api/annotations.proto";
message M { string id = 1; Inner inner = 2; }
message Inner { string name = 1; }
service S { rpc Get(M) returns (M) { option (google.api.http) = { ${rule} }; } }`);

  const inspect = (rule: string) => {
    const out = compileProtoFiles({ "a.proto": annotated(rule) });
    if (!out.ok) throw new Error(JSON.stringify(out.problems));
    return inspectDescriptorSet(out.bytes);
  };

  it("lists services with their methods and bindings", () => {
    const out = inspect('get: "/v1/{inner.name}" additional_bindings { post: "/v1/m" body: "*" }');
    expect(out.ok && out.summary.services.get("a.S")).toEqual([
      {
        name: "Get",
        input: "a.M",
        output: "a.M",
        bindings: [
          { method: "GET", path: "/v1/{inner.name}" },
          { method: "POST", path: "/v1/m", body: "*" },
        ],
      },
    ]);
  });

  it("refuses a path variable or body naming no field, and a path that does not parse", () => {
    expect(inspect('get: "/v1/{nope}"')).toEqual({
      ok: false,
      problems: [
        { file: "a.proto", reason: "a.S.Get (google.api.http) GET /v1/{nope}: a.M has no field 'nope'" },
      ],
    });
    expect(inspect('post: "/v1" body: "inner.missing"')).toEqual({
      ok: false,
      problems: [
        {
          file: "a.proto",
          reason: "a.S.Get (google.api.http) POST /v1: body: a.M has no field 'inner.missing'",
        },
      ],
    });
    expect(inspect('get: "/v1/{id"')).toEqual({
      ok: false,
      problems: [
        { file: "a.proto", reason: "a.S.Get (google.api.http) GET /v1/{id: the path has a '{' without '}'" },
      ],
    });
  });

  it("refuses a set whose file imports one it does not hold, and bytes that are not a set", () => {
    const set = compiled({ [BOOKSTORE]: bookstore });
    const stripped = encodeFileDescriptorSet({
      file: set.file.filter((f) => f.name !== "google/api/http.proto"),
    });
    expect(inspectDescriptorSet(stripped)).toEqual({
      ok: false,
      problems: [
        {
          file: "google/api/annotations.proto",
          reason:
            "imports google/api/http.proto, which the set does not hold (build it with protoc --include_imports)",
        },
        {
          file: "google/api/annotations.proto",
          reason: "field google.api.http refers to unknown type .google.api.HttpRule",
        },
      ],
    });
    const garbage = inspectDescriptorSet(Buffer.from("not a descriptor set at all"));
    expect(garbage.ok).toBe(false);
    expect(!garbage.ok && garbage.problems[0]!.reason).toMatch(/^not a serialized FileDescriptorSet/);
  });
});

describe("path templates", () => {
  it("takes the google.api.http grammar", () => {
    expect(parseTemplate("/v1/{name=shelves/*/books/*}:publish")).toEqual({ ok: true, variables: ["name"] });
    expect(parseTemplate("/v1/{a.b}/x/**")).toEqual({ ok: true, variables: ["a.b"] });
  });

  it("refuses what Envoy's path matcher refuses", () => {
    for (const [t, reason] of [
      ["v1/x", "must start with '/'"],
      ["/v1//x", "has an empty segment"],
      ["/v1/{a}}", "has a '}' without '{'"],
      ["/v1/{a={b}}", "variables cannot nest"],
      ["/v1/**/x", "'**' must be the last segment"],
      ["/v1/{1a}", "variable '{1a}' does not name a field"],
    ]) {
      expect(parseTemplate(t!)).toEqual({ ok: false, reason });
    }
  });
});

function config(extra: Partial<ConfigInput> = {}, route: Record<string, unknown> = {}): ConfigInput {
  return {
    gateways: [{ name: "edge", listeners: [{ name: "http", port: 10000 }] }],
    upstreams: [
      { name: "bookstore", protocol: "grpc", endpoints: [{ host: "127.0.0.1", port: 9090 }] },
      { name: "web", endpoints: [{ host: "127.0.0.1", port: 8080 }] },
    ],
    protoDescriptors: [{ name: "books", files: { [BOOKSTORE]: bookstore } }],
    routes: [
      {
        name: "books",
        gateway: "edge",
        match: { pathPrefix: "/v1/books" },
        upstream: "bookstore",
        grpcTranscode: { descriptors: "books", services: ["portico.sample.v1.Bookstore"] },
        ...route,
      },
      { name: "site", gateway: "edge", match: { pathPrefix: "/" }, upstream: "web" },
    ],
    ...extra,
  };
}

function details(input: ConfigInput) {
  try {
    validateConfig(input);
  } catch (err) {
    if (err instanceof ConfigError) return err.details;
    throw err;
  }
  return [];
}

describe("the model's checks", () => {
  it("takes a route transcoding to a gRPC upstream with a service the descriptors hold", () => {
    expect(details(config())).toEqual([]);
  });

  it("takes a binary FileDescriptorSet as well as sources", () => {
    const out = compileProtoFiles({ [BOOKSTORE]: bookstore });
    const base64 = Buffer.from((out as { bytes: Uint8Array }).bytes).toString("base64");
    expect(details(config({ protoDescriptors: [{ name: "books", descriptorSet: base64 }] }))).toEqual([]);
    expect(
      details(
        config({
          protoDescriptors: [{ name: "books", descriptorSet: Buffer.from("nope").toString("base64") }],
        }),
      ),
    ).toEqual([
      { field: "protoDescriptors[0].descriptorSet", reason: expect.stringMatching(/^not a serialized/) },
    ]);
  });

  it("names the file of a bad upload", () => {
    expect(
      details(
        config({
          protoDescriptors: [
            { name: "books", files: { [BOOKSTORE]: bookstore.replace("Book book", "Bok book") } },
          ],
        }),
      ),
    ).toEqual([
      {
        field: `protoDescriptors[0].files["${BOOKSTORE}"]`,
        reason: "unknown type 'Bok' (in portico.sample.v1.CreateBookRequest)",
      },
    ]);
  });

  it("refuses an unknown service, a missing descriptor set and a non-gRPC upstream", () => {
    expect(
      details(config({}, { grpcTranscode: { descriptors: "books", services: ["portico.sample.v1.Nope"] } })),
    ).toEqual([
      {
        field: "routes[0].grpcTranscode.services[0]",
        reason:
          "proto descriptors 'books' have no service 'portico.sample.v1.Nope' (services: portico.sample.v1.Bookstore)",
      },
    ]);
    expect(details(config({}, { grpcTranscode: { descriptors: "other", services: ["a.B"] } }))).toEqual([
      { field: "routes[0].grpcTranscode.descriptors", reason: "no proto descriptors named 'other'" },
    ]);
    expect(details(config({}, { upstream: "web" }))).toEqual([
      {
        field: "routes[0].upstream",
        reason: "upstream 'web' must have protocol grpc to receive transcoded calls",
      },
    ]);
  });

  it("refuses transcoding on a route without upstreams", () => {
    expect(details(config({}, { upstream: undefined, directResponse: { status: 200 } }))).toEqual([
      { field: "routes[0].grpcTranscode", reason: "transcoding needs the route to have upstreams" },
    ]);
  });

  it("bounds the size of an upload", () => {
    const big = `${"// padding\n".repeat(MAX_DESCRIPTOR_BYTES / 11 + 1)}syntax = "proto3";`;
    expect(buildDescriptors({ name: "big", files: { "big.proto": big } })).toEqual({
      ok: false,
      problems: [
        { field: "files", reason: expect.stringMatching(/^the sources hold \d+ bytes; at most 1048576$/) },
      ],
    });
  });

  it("refuses a file name that is not a relative .proto path, and both or neither of files and descriptorSet", () => {
    expect(
      details(config({ protoDescriptors: [{ name: "books", files: { "../etc/x.proto": "" } }] }))[0]!.field,
    ).toBe("protoDescriptors[0].files.../etc/x.proto");
    expect(details(config({ protoDescriptors: [{ name: "books" }] }))).toEqual([
      { field: "protoDescriptors[0]", reason: "give exactly one of files or descriptorSet" },
    ]);
  });
});

describe("translation", () => {
  it("turns the transcoder on only for the routes that transcode, with their descriptors and services", () => {
    const edge = translate(
      validateConfig(
        config(
          {},
          {
            grpcTranscode: {
              descriptors: "books",
              services: ["portico.sample.v1.Bookstore"],
              printOptions: { preserveProtoFieldNames: true },
              ignoreUnknownQueryParameters: true,
            },
          },
        ),
      ),
    ).get("edge")!;
    const listener = edge.find((r) => r.typeUrl === TypeUrl.Listener)!.message as any;
    const filters = listener.filter_chains[0].filters[0].typed_config.http_filters;
    const transcoder = filters.find((f: any) => f.name === "envoy.filters.http.grpc_json_transcoder");
    expect(transcoder).toMatchObject({ disabled: true });
    // Just before the router: it sees the request after authentication and limits.
    expect(filters.indexOf(transcoder)).toBe(filters.length - 2);
    const routes = (edge.find((r) => r.typeUrl === TypeUrl.Route)!.message as any).virtual_hosts[0].routes;
    const books = routes.find((r: any) => r.name === "books");
    const perRoute = books.typed_per_filter_config["envoy.filters.http.grpc_json_transcoder"];
    const built = buildDescriptors({ name: "books", files: { [BOOKSTORE]: bookstore } });
    expect(perRoute).toEqual({
      "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
      proto_descriptor_bin: Buffer.from((built as { bytes: Uint8Array }).bytes).toString("base64"),
      services: ["portico.sample.v1.Bookstore"],
      print_options: { preserve_proto_field_names: true },
      match_incoming_request_route: true,
      ignore_unknown_query_parameters: true,
      convert_grpc_status: true,
      request_validation_options: { reject_unknown_method: true, reject_unknown_query_parameters: false },
    });
    const site = routes.find((r: any) => r.name === "site");
    expect(site.typed_per_filter_config?.["envoy.filters.http.grpc_json_transcoder"]).toBeUndefined();
  });

  it("adds no transcoder to listeners without transcoding routes", () => {
    const input = config();
    input.routes = input.routes!.filter((r) => r.name === "site");
    const listener = translate(validateConfig(input))
      .get("edge")!
      .find((r) => r.typeUrl === TypeUrl.Listener)!.message as any;
    const names = listener.filter_chains[0].filters[0].typed_config.http_filters.map((f: any) => f.name);
    expect(names).not.toContain("envoy.filters.http.grpc_json_transcoder");
  });
});
