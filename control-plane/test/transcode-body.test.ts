import { describe, expect, it } from "vitest";
import { buildDescriptors } from "../src/model/grpc-transcode.js";
import { bodyShapes, templateSegments } from "../src/model/transcode-body.js";

const proto = `
syntax = "proto3";
package shop.v1;
import "google/api/annotations.proto";
import "google/protobuf/struct.proto";
service Shop {
  rpc GetItem(GetItemRequest) returns (Item) { option (google.api.http) = { get: "/v1/items/{id}" }; }
  rpc CreateItem(CreateItemRequest) returns (Item) {
    option (google.api.http) = { post: "/v1/{parent=shops/*}/items" body: "item" };
  }
  rpc Publish(Item) returns (Item) {
    option (google.api.http) = { post: "/v1/items/{id}:publish" body: "*" additional_bindings { put: "/v1/items/**" body: "labels" } };
  }
}
message GetItemRequest { string id = 1; }
message CreateItemRequest { string parent = 1; Item item = 2; }
message Item {
  string id = 1;
  int32 stock_count = 2;
  Item parent_item = 3;
  map<string, Label> labels = 4;
  google.protobuf.Struct extra = 5;
  repeated Label history = 6;
}
message Label { string text = 1; }
`;

describe("the bodies of transcoded calls", () => {
  it("knows, for each binding that takes a body, which message it fills and the fields JSON may name", () => {
    const built = buildDescriptors({ name: "shop", files: { "shop/v1/shop.proto": proto } });
    if (!built.ok) throw new Error(JSON.stringify(built.problems));
    const shapes = bodyShapes(built.bytes, ["shop.v1.Shop"]);
    expect(shapes.bindings).toEqual([
      { method: "POST", segments: ["v1", "shops", "*", "items"], shape: ".shop.v1.Item" },
      { method: "POST", segments: ["v1", "items", "*"], verb: "publish", shape: ".shop.v1.Item" },
      { method: "PUT", segments: ["v1", "items", "**"], shape: { map: ".shop.v1.Label" } },
    ]);
    expect(shapes.messages).toEqual({
      ".shop.v1.Item": {
        id: 0,
        stock_count: 0,
        stockCount: 0,
        parent_item: ".shop.v1.Item",
        parentItem: ".shop.v1.Item",
        labels: { map: ".shop.v1.Label" },
        extra: 0,
        history: ".shop.v1.Label",
      },
      ".shop.v1.Label": { text: 0 },
    });
  });

  it("reads a path template's segments and verb", () => {
    expect(templateSegments("/v1/{name=shelves/*/books/*}:archive")).toEqual({
      segments: ["v1", "shelves", "*", "books", "*"],
      verb: "archive",
    });
    expect(templateSegments("/v1/{id}")).toEqual({ segments: ["v1", "*"] });
  });
});
