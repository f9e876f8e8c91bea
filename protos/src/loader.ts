import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import protobuf from "protobufjs";

const require = createRequire(import.meta.url);

/** Where Envoy's API protos and their dependencies live: the `deps/` tree of `@grpc/grpc-js-xds`. */
export function envoyProtoIncludeDirs(): string[] {
  const xdsPkg = path.dirname(require.resolve("@grpc/grpc-js-xds/package.json"));
  const protobufjsPkg = path.dirname(require.resolve("protobufjs/package.json"));
  return [
    path.join(xdsPkg, "deps", "envoy-api"),
    path.join(xdsPkg, "deps", "xds"),
    path.join(xdsPkg, "deps", "googleapis"),
    path.join(xdsPkg, "deps", "protoc-gen-validate"),
    // google/protobuf/descriptor.proto and friends that protobufjs does not keep in memory.
    protobufjsPkg,
    // Portico's own .proto files.
    porticoProtoDir(),
  ];
}

/** Portico's own `.proto` files (policy resource types, sample services). */
export function porticoProtoDir(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
}

/**
 * Loads `.proto` files by their import path (e.g. `envoy/config/listener/v3/listener.proto`)
 * into one protobufjs Root, keeping field names as written in the `.proto` (snake_case), so
 * that objects look like Envoy's own YAML and docs.
 */
export function loadProtoRoot(
  files: string[],
  includeDirs: string[] = envoyProtoIncludeDirs(),
): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (origin: string, target: string): string | null => {
    // Well-known types that protobufjs already holds in memory.
    if (target.startsWith("google/protobuf/") && protobuf.common.get(target)) return target;
    if (path.isAbsolute(target) && fs.existsSync(target)) return target;
    for (const dir of includeDirs) {
      const candidate = path.join(dir, target);
      if (fs.existsSync(candidate)) return candidate;
    }
    return protobuf.util.path.resolve(origin, target);
  };
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  return root;
}
