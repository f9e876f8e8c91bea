/**
 * The `.proto` files an upload may import without sending them: protobuf's well-known types and
 * googleapis' `google/api` and `google/rpc` files (annotations.proto, http.proto, status.proto…),
 * which nearly every transcoded service imports and nobody wants to upload again.
 */
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/**
 * protobufjs keeps the well-known types in memory as JSON (camelCase names), not as `.proto`
 * text, and a descriptor needs the names as declared, so their (short, frozen) sources are here.
 */
const WELL_KNOWN: Record<string, string> = {
  "google/protobuf/any.proto": `syntax = "proto3";
package google.protobuf;
message Any {
  string type_url = 1;
  bytes value = 2;
}
`,
  "google/protobuf/duration.proto": `syntax = "proto3";
package google.protobuf;
message Duration {
  int64 seconds = 1;
  int32 nanos = 2;
}
`,
  "google/protobuf/timestamp.proto": `syntax = "proto3";
package google.protobuf;
message Timestamp {
  int64 seconds = 1;
  int32 nanos = 2;
}
`,
  "google/protobuf/empty.proto": `syntax = "proto3";
package google.protobuf;
message Empty {}
`,
  "google/protobuf/field_mask.proto": `syntax = "proto3";
package google.protobuf;
message FieldMask {
  repeated string paths = 1;
}
`,
  "google/protobuf/struct.proto": `syntax = "proto3";
package google.protobuf;
message Struct {
  map<string, Value> fields = 1;
}
message Value {
  oneof kind {
    NullValue null_value = 1;
    double number_value = 2;
    string string_value = 3;
    bool bool_value = 4;
    Struct struct_value = 5;
    ListValue list_value = 6;
  }
}
enum NullValue {
  NULL_VALUE = 0;
}
message ListValue {
  repeated Value values = 1;
}
`,
  "google/protobuf/wrappers.proto": `syntax = "proto3";
package google.protobuf;
message DoubleValue { double value = 1; }
message FloatValue { float value = 1; }
message Int64Value { int64 value = 1; }
message UInt64Value { uint64 value = 1; }
message Int32Value { int32 value = 1; }
message UInt32Value { uint32 value = 1; }
message BoolValue { bool value = 1; }
message StringValue { string value = 1; }
message BytesValue { bytes value = 1; }
`,
};

function packageDir(pkg: string): string {
  return path.dirname(require.resolve(`${pkg}/package.json`));
}

/** Directory → which import paths it answers for. */
function providers(): { dir: string; prefixes: string[] }[] {
  return [
    // descriptor.proto (which annotations.proto imports), type.proto, api.proto, source_context.proto.
    { dir: packageDir("protobufjs"), prefixes: ["google/protobuf/"] },
    // googleapis' own files as Google publishes them for Node.
    { dir: packageDir("google-proto-files"), prefixes: ["google/api/", "google/rpc/"] },
  ];
}

const cache = new Map<string, string | null>();

/** The source of a file every upload can import, or undefined when Portico does not provide it. */
export function providedSource(name: string): string | undefined {
  if (name in WELL_KNOWN) return WELL_KNOWN[name];
  // Only plain relative names reach the file system.
  if (name.includes("..") || name.startsWith("/") || name.includes("\\") || !name.endsWith(".proto")) {
    return undefined;
  }
  let text = cache.get(name);
  if (text === undefined) {
    text = null;
    for (const { dir, prefixes } of providers()) {
      if (!prefixes.some((p) => name.startsWith(p))) continue;
      const file = path.join(dir, name);
      if (fs.existsSync(file)) {
        text = fs.readFileSync(file, "utf8");
        break;
      }
    }
    cache.set(name, text);
  }
  return text ?? undefined;
}
