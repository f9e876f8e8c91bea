import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";

const require = createRequire(import.meta.url);

/** What protobufjs' descriptor extension adds to Root at run time (its typings leave it out). */
const DescriptorRoot = protobuf.Root as unknown as {
  fromDescriptor(set: { file: readonly descriptor.IFileDescriptorProto[] }): protobuf.Root;
};
const toDescriptor = (root: protobuf.Root, syntax: string) =>
  (root as unknown as { toDescriptor(syntax: string): { file: FileProto[] } }).toDescriptor(syntax);

/** Portico's own `.proto` files (policy resource types, sample services). */
export function porticoProtoDir(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
}

/**
 * Envoy's data-plane API and everything it imports (xds, udpa, validate, googleapis), compiled:
 * one FileDescriptorSet built at install time from the `xds-protos` release that
 * `scripts/build-envoy-api.mjs` pins.
 */
export function envoyApiDescriptorFile(): string {
  return path.join(porticoProtoDir(), "generated", "envoy-api.binpb");
}

type FileProto = protobuf.Message<descriptor.IFileDescriptorProto> & descriptor.IFileDescriptorProto;

/** One file of the API: its name and imports, read up front; the rest decoded when first needed. */
interface ApiFile {
  readonly name: string;
  readonly dependencies: readonly string[];
  readonly bytes: Uint8Array;
  decoded?: FileProto;
}

let apiFiles: Map<string, ApiFile> | undefined;

/**
 * The API's files by import path. Only each file's name and imports are read here; a service
 * that needs a few dozen of the API's ~800 files decodes just those, and holds just those.
 */
function apiFileIndex(): Map<string, ApiFile> {
  if (!apiFiles) {
    const file = envoyApiDescriptorFile();
    if (!fs.existsSync(file)) {
      throw new Error(
        `${file} is missing: Envoy's API descriptors are built at install time (npm run build, or node protos/scripts/build-envoy-api.mjs)`,
      );
    }
    apiFiles = new Map();
    // FileDescriptorSet { repeated FileDescriptorProto file = 1; }
    const set = protobuf.Reader.create(fs.readFileSync(file));
    while (set.pos < set.len) {
      if (set.uint32() >>> 3 !== 1) throw new Error(`${file} is not a FileDescriptorSet`);
      const bytes = set.bytes();
      // FileDescriptorProto { string name = 1; repeated string dependency = 3; ... }
      const head = protobuf.Reader.create(bytes);
      let name = "";
      const dependencies: string[] = [];
      while (head.pos < head.len) {
        const tag = head.uint32();
        if (tag === ((1 << 3) | 2)) name = head.string();
        else if (tag === ((3 << 3) | 2)) dependencies.push(head.string());
        else head.skipType(tag & 7);
      }
      apiFiles.set(name, { name, dependencies, bytes });
    }
  }
  return apiFiles;
}

const WELL_KNOWN = [
  "any",
  "descriptor",
  "duration",
  "empty",
  "field_mask",
  "struct",
  "timestamp",
  "wrappers",
].map((n) => `google/protobuf/${n}.proto`);

let wellKnown: FileProto[] | undefined;

/**
 * protobuf's well-known types and descriptor.proto (which the API's annotations extend), as
 * protobufjs itself defines them, so every Root agrees on them with the rest of the code
 * (protobufjs holds the well-known types with camelCase field names: `Value.stringValue`).
 */
function wellKnownFiles(): FileProto[] {
  if (!wellKnown) {
    const root = new protobuf.Root();
    const protobufjs = path.dirname(require.resolve("protobufjs/package.json"));
    root.loadSync(
      [
        path.join(protobufjs, "google", "protobuf", "descriptor.proto"),
        ...WELL_KNOWN.filter((f) => f !== "google/protobuf/descriptor.proto"),
      ],
      { keepCase: true },
    );
    wellKnown = toDescriptor(root, "proto3").file;
  }
  return wellKnown;
}

/**
 * protobufjs builds a map field from a descriptor as the repeated `XxxEntry` message the
 * descriptor spells it with; this turns each back into a map, as the `.proto` declares it, so
 * that `{headers: {a: "b"}}` encodes and decodes as it would from source.
 */
function restoreMaps(ns: protobuf.NamespaceBase): void {
  for (const nested of ns.nestedArray) {
    if (nested instanceof protobuf.Type) {
      let changed = false;
      for (const field of [...nested.fieldsArray]) {
        const entry = field.repeated ? field.resolve().resolvedType : null;
        // protobufjs also marks the parent of a map entry `map_entry`, so an entry is told by its
        // place and shape as well: a nested message of exactly `key = 1` and `value = 2`.
        const isEntry =
          entry instanceof protobuf.Type &&
          entry.parent === nested &&
          entry.options?.["map_entry"] === true &&
          entry.fieldsArray.length === 2 &&
          entry.fields["key"]?.id === 1 &&
          entry.fields["value"]?.id === 2;
        if (!isEntry) continue;
        nested.remove(field);
        nested.add(
          new protobuf.MapField(
            field.name,
            field.id,
            entry.fields["key"]!.type,
            entry.fields["value"]!.type,
            field.options,
          ),
        );
        nested.remove(entry);
        changed = true;
      }
      if (changed) {
        // The message constructor protobufjs already generated still builds the old fields.
        nested.ctor = protobuf.Type.generateConstructor(nested)() as protobuf.Constructor<object>;
        const prototype = nested.ctor.prototype as Record<string, unknown>;
        for (const f of nested.fieldsArray) prototype[f.name] = f.resolve().defaultValue;
      }
    }
    if (nested instanceof protobuf.Namespace || nested instanceof protobuf.Type) restoreMaps(nested);
  }
}

const isWellKnown = (name: string) => name.startsWith("google/protobuf/");

/** The API files `names` need, dependencies first, each once. */
function apiClosure(names: readonly string[]): FileProto[] {
  const index = apiFileIndex();
  const seen = new Set<string>();
  const ordered: FileProto[] = [];
  const visit = (name: string) => {
    if (seen.has(name) || isWellKnown(name)) return;
    seen.add(name);
    const file = index.get(name);
    if (!file) throw new Error(`${name} is not a file of Envoy's API (${envoyApiDescriptorFile()})`);
    for (const dep of file.dependencies) visit(dep);
    file.decoded ??= descriptor.FileDescriptorProto.decode(file.bytes) as FileProto;
    ordered.push(file.decoded);
  };
  names.forEach(visit);
  return ordered;
}

/** Where a source file is: the first of `dirs` that has it. */
function findSource(name: string, dirs: readonly string[]): string | undefined {
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    if (fs.existsSync(candidate)) return candidate;
  }
  return undefined;
}

/**
 * Loads `.proto` files by their import path into one protobufjs Root, field names as written in
 * the `.proto` (snake_case), so objects look like Envoy's own YAML and docs. A file found in
 * `sourceDirs` (Portico's own `portico/...` by default) is parsed from its source; any other comes
 * from the compiled descriptors of Envoy's API (e.g. `envoy/config/listener/v3/listener.proto`),
 * and so do the API files a source file imports.
 */
export function loadProtoRoot(
  files: string[],
  sourceDirs: readonly string[] = [porticoProtoDir()],
): protobuf.Root {
  const index = apiFileIndex();
  const sources = new Map<string, string>();
  const apiNeeded: string[] = [];
  const pending = [...files];
  while (pending.length > 0) {
    const name = pending.pop()!;
    if (sources.has(name) || isWellKnown(name)) continue;
    const file = findSource(name, sourceDirs);
    if (!file) {
      if (!index.has(name))
        throw new Error(`${name} is neither in ${sourceDirs.join(", ")} nor a file of Envoy's API`);
      apiNeeded.push(name);
      continue;
    }
    sources.set(name, file);
    const parsed = protobuf.parse(fs.readFileSync(file, "utf8"), { keepCase: true });
    pending.push(...(parsed.imports ?? []), ...(parsed.weakImports ?? []));
  }
  const api = apiClosure(apiNeeded);
  const root = DescriptorRoot.fromDescriptor({ file: [...wellKnownFiles(), ...api] });
  restoreMaps(root);
  // What is already defined is not loaded again from source.
  root.files.push(...WELL_KNOWN, ...api.map((f) => f.name!));
  if (sources.size > 0) {
    root.resolvePath = (_origin: string, target: string) => sources.get(target) ?? null;
    root.loadSync(
      files.filter((f) => sources.has(f)),
      { keepCase: true },
    );
  }
  root.resolveAll();
  return root;
}
