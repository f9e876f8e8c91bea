/**
 * `.proto` sources → a serialized `FileDescriptorSet`, what `protoc --include_imports
 * --descriptor_set_out` makes. protobufjs parses each file; the descriptors are built here rather
 * than with protobufjs' `Root.toDescriptor`, which groups definitions by package instead of by
 * file, drops imports and drops custom options such as `(google.api.http)` — and Envoy's
 * transcoder needs all three. Names resolve the way protoc resolves them (innermost scope first,
 * only through the file's own imports), so what protoc refuses is refused here with its reason.
 */
import protobuf from "protobufjs";
import { providedSource } from "./sources.js";
import {
  encodeFileDescriptorSet,
  httpRuleFieldNames,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FieldDescriptorProto,
  type FileDescriptorProto,
  type HttpRuleProto,
  type MethodDescriptorProto,
  type ServiceDescriptorProto,
} from "./wire.js";

/** A problem in one file of an upload (`file` is the name it was uploaded under). */
export interface SourceProblem {
  file: string;
  reason: string;
}

export type Compiled = { ok: true; bytes: Uint8Array } | { ok: false; problems: SourceProblem[] };

interface ParsedFile {
  name: string;
  syntax: "proto2" | "proto3";
  pkg: protobuf.Namespace | protobuf.Root;
  imports: string[];
  publicImports: string[];
  weakImports: string[];
}

interface Definition {
  kind: "package" | "message" | "enum" | "service";
  file: string;
  obj?: protobuf.ReflectionObject;
}

const SCALARS: Record<string, string> = {
  double: "TYPE_DOUBLE",
  float: "TYPE_FLOAT",
  int64: "TYPE_INT64",
  uint64: "TYPE_UINT64",
  int32: "TYPE_INT32",
  fixed64: "TYPE_FIXED64",
  fixed32: "TYPE_FIXED32",
  bool: "TYPE_BOOL",
  string: "TYPE_STRING",
  bytes: "TYPE_BYTES",
  uint32: "TYPE_UINT32",
  sfixed32: "TYPE_SFIXED32",
  sfixed64: "TYPE_SFIXED64",
  sint32: "TYPE_SINT32",
  sint64: "TYPE_SINT64",
};

const HTTP_OPTION = "(google.api.http)";
const ANNOTATIONS = "google/api/annotations.proto";
/** protobufjs writes `max` in extension and reserved ranges as the largest field number. */
const MAX_FIELD = 536_870_911;

function stripComments(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, "");
}

/** protobufjs says `illegal token 'x' (line 3)`; the file is already the problem's field. */
function parseReason(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const m = /^(.*) \((?:[^,()]*, )?line (\d+)\)$/.exec(message);
  return m ? `line ${m[2]}: ${m[1]}` : message;
}

function parseFile(name: string, text: string): ParsedFile | string {
  const clean = stripComments(text);
  const head = /^\s*(syntax|edition)\s*=\s*["']([^"']*)["']\s*;/.exec(clean);
  if (head?.[1] === "edition") return 'editions are not supported; declare syntax = "proto3" (or "proto2")';
  const syntax = head?.[2] ?? "proto2";
  if (syntax !== "proto2" && syntax !== "proto3") return `unknown syntax "${syntax}"`;
  let parsed: protobuf.IParserResult;
  try {
    parsed = protobuf.parse(text, new protobuf.Root(), { keepCase: true });
  } catch (err) {
    return parseReason(err);
  }
  const publicImports = [...clean.matchAll(/\bimport\s+public\s+["']([^"']+)["']/g)].map((m) => m[1]!);
  const pkg = parsed.package ? (parsed.root.lookup(parsed.package) as protobuf.Namespace) : parsed.root;
  return {
    name,
    syntax,
    pkg,
    imports: [...(parsed.imports ?? []), ...(parsed.weakImports ?? [])],
    publicImports,
    weakImports: parsed.weakImports ?? [],
  };
}

/** protoc's json_name: underscores dropped, the letter after one upper-cased. */
function jsonName(name: string): string {
  return name.replace(/_+(.)?/g, (_m, c: string | undefined) => (c ? c.toUpperCase() : ""));
}

/** protoc's name for the message a map field is made of: `tag_counts` → `TagCountsEntry`. */
function mapEntryName(field: string): string {
  const camel = jsonName(field);
  return camel.charAt(0).toUpperCase() + camel.slice(1) + "Entry";
}

function defaultValue(v: unknown): string {
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "nan";
    if (v === Infinity) return "inf";
    if (v === -Infinity) return "-inf";
  }
  return String(v);
}

function ranges(list: (number[] | string)[] | undefined, exclusiveEnd: boolean) {
  return (list ?? [])
    .filter((r): r is number[] => Array.isArray(r))
    .map(([start, end]) => ({ start: start!, end: Math.min(end!, MAX_FIELD) + (exclusiveEnd ? 1 : 0) }));
}

function reservedNames(list: (number[] | string)[] | undefined): string[] {
  return (list ?? []).filter((r): r is string => typeof r === "string");
}

/** Builds descriptors for the files of one upload and everything they import. */
class Compiler {
  readonly problems: SourceProblem[] = [];
  readonly files = new Map<string, ParsedFile>();
  private readonly symbols = new Map<string, Definition>();
  private readonly httpFields = new Set(httpRuleFieldNames());

  constructor(private readonly uploaded: Record<string, string>) {}

  private problem(file: string, reason: string): void {
    this.problems.push({ file, reason });
  }

  /** Parses the uploaded files and, transitively, the provided files they import. */
  load(): void {
    const queue = Object.keys(this.uploaded).sort();
    const queued = new Set(queue);
    for (let i = 0; i < queue.length; i++) {
      const name = queue[i]!;
      const text = this.uploaded[name] ?? providedSource(name)!;
      const parsed = parseFile(name, text);
      if (typeof parsed === "string") {
        this.problem(name, parsed);
        continue;
      }
      this.files.set(name, parsed);
      for (const imp of parsed.imports) {
        if (queued.has(imp)) continue;
        if (imp in this.uploaded || providedSource(imp) !== undefined) {
          queue.push(imp);
          queued.add(imp);
        } else {
          this.problem(
            name,
            `import "${imp}" is neither in the upload nor one Portico provides (google/protobuf/*, google/api/*, google/rpc/*)`,
          );
        }
      }
    }
  }

  private define(
    file: string,
    full: string,
    kind: Definition["kind"],
    obj?: protobuf.ReflectionObject,
  ): void {
    const existing = this.symbols.get(full);
    if (existing && (existing.kind !== "package" || kind !== "package")) {
      const where = existing.file === file ? "in this file" : `in ${existing.file}`;
      this.problem(file, `'${full.slice(1)}' is already defined ${where}`);
      return;
    }
    if (!existing) this.symbols.set(full, { kind, file, obj });
  }

  private collect(file: string, ns: protobuf.NamespaceBase): void {
    for (const obj of ns.nestedArray) {
      if (obj instanceof protobuf.Type) {
        this.define(file, obj.fullName, "message", obj);
        this.collect(file, obj);
      } else if (obj instanceof protobuf.Service) {
        this.define(file, obj.fullName, "service", obj);
      } else if (obj instanceof protobuf.Enum) {
        this.define(file, obj.fullName, "enum", obj);
      } else if (obj instanceof protobuf.Namespace) {
        this.define(file, obj.fullName, "package");
        this.collect(file, obj);
      }
    }
  }

  collectSymbols(): void {
    for (const f of this.files.values()) {
      // The package's enclosing namespaces are packages too (`a` of `a.b`).
      let ns: protobuf.NamespaceBase | null = f.pkg;
      while (ns && !(ns instanceof protobuf.Root)) {
        this.define(f.name, ns.fullName, "package");
        ns = ns.parent;
      }
      this.collect(f.name, f.pkg);
    }
  }

  /** The files whose definitions `file` may use: itself, its imports and what they import publicly. */
  private visible(file: string): Set<string> {
    const out = new Set([file]);
    const addPublic = (name: string) => {
      if (out.has(name)) return;
      out.add(name);
      for (const p of this.files.get(name)?.publicImports ?? []) addPublic(p);
    };
    for (const imp of this.files.get(file)?.imports ?? []) addPublic(imp);
    return out;
  }

  /** Resolves a type name as protoc does: innermost scope first, then outwards. */
  private resolve(
    file: string,
    name: string,
    scope: string,
    kinds: Definition["kind"][],
  ): { full: string; sym: Definition } | undefined {
    let found: { full: string; sym: Definition } | undefined;
    if (name.startsWith(".")) {
      const sym = this.symbols.get(name);
      if (sym) found = { full: name, sym };
    } else {
      const [first, ...rest] = name.split(".");
      const parts = scope.split(".");
      for (let i = parts.length; i >= 1 && !found; i--) {
        const prefix = parts.slice(0, i).join(".");
        const head = this.symbols.get(`${prefix}.${first}`);
        if (!head) continue;
        if (rest.length === 0) {
          found = { full: `${prefix}.${first}`, sym: head };
          break;
        }
        const full = `${prefix}.${name}`;
        const sym = this.symbols.get(full);
        if (sym) found = { full, sym };
        else if (head.kind === "message" || head.kind === "package") {
          this.problem(file, `'${name}' resolves to '${full.slice(1)}', which is not defined`);
          return undefined;
        }
      }
    }
    if (!found) {
      this.problem(file, `unknown type '${name}' (in ${scope.slice(1) || "the file"})`);
      return undefined;
    }
    if (found.sym.kind !== "package" && !this.visible(file).has(found.sym.file)) {
      this.problem(
        file,
        `'${name}' is defined in ${found.sym.file}, which this file does not import; add import "${found.sym.file}"`,
      );
      return undefined;
    }
    if (!kinds.includes(found.sym.kind)) {
      this.problem(file, `'${name}' is a ${found.sym.kind}, not a ${kinds.join(" or ")}`);
      return undefined;
    }
    return found;
  }

  private field(file: ParsedFile, f: protobuf.Field, scope: string, oneofs: Map<string, number>) {
    const out: FieldDescriptorProto = {
      name: f.name,
      number: f.id,
      label: f.repeated || f.map ? "LABEL_REPEATED" : f.required ? "LABEL_REQUIRED" : "LABEL_OPTIONAL",
      type: "",
    };
    if (f.map) {
      out.type = "TYPE_MESSAGE";
      out.type_name = `${scope}.${mapEntryName(f.name)}`;
    } else if (SCALARS[f.type]) {
      out.type = SCALARS[f.type]!;
    } else {
      const target = this.resolve(file.name, f.type, scope, ["message", "enum"]);
      if (target) {
        // protobufjs marks a group's message type, without declaring it in its types.
        if ((target.sym.obj as { group?: boolean } | undefined)?.group) {
          this.problem(file.name, `field '${f.name}' is a group; groups are not supported`);
        }
        out.type = target.sym.kind === "enum" ? "TYPE_ENUM" : "TYPE_MESSAGE";
        out.type_name = target.full;
      }
    }
    const options = (f.options ?? {}) as Record<string, unknown>;
    if (options.default !== undefined) out.default_value = defaultValue(options.default);
    if (f.partOf) out.oneof_index = oneofs.get(f.partOf.name);
    out.json_name = typeof options.json_name === "string" ? options.json_name : jsonName(f.name);
    if (typeof options.packed === "boolean") out.options = { packed: options.packed };
    if (file.syntax === "proto3" && options.proto3_optional === true) out.proto3_optional = true;
    return out;
  }

  private extension(file: ParsedFile, f: protobuf.Field, scope: string): FieldDescriptorProto {
    const out = this.field(file, f, scope, new Map());
    const target = this.resolve(file.name, f.extend!, scope, ["message"]);
    if (target) {
      out.extendee = target.full;
      const type = target.sym.obj as protobuf.Type;
      const inRange = (type.extensions ?? []).some(([lo, hi]) => f.id >= lo! && f.id <= hi!);
      if (!inRange) {
        this.problem(file.name, `${target.full.slice(1)} does not declare ${f.id} as an extension number`);
      }
    }
    return out;
  }

  private message(file: ParsedFile, t: protobuf.Type): DescriptorProto {
    // protobufjs adds a field to a message for each extension of it; those belong to the extension.
    const fields = t.fieldsArray.filter((f) => !f.declaringField);
    const synthetic = (o: protobuf.OneOf) =>
      o.oneof.length === 1 && (t.fields[o.oneof[0]!]?.options ?? {}).proto3_optional === true;
    // protoc lists proto3 `optional`'s synthetic oneofs after the declared ones.
    const oneofList = [...t.oneofsArray.filter((o) => !synthetic(o)), ...t.oneofsArray.filter(synthetic)];
    const oneofs = new Map(oneofList.map((o, i) => [o.name, i]));
    const out: DescriptorProto = {
      name: t.name,
      field: fields.map((f) => this.field(file, f, t.fullName, oneofs)),
      nested_type: [],
      enum_type: [],
      extension: [],
      oneof_decl: oneofList.map((o) => ({ name: o.name })),
      extension_range: ranges(t.extensions, true),
      reserved_range: ranges(t.reserved, true),
      reserved_name: reservedNames(t.reserved),
    };
    for (const obj of t.nestedArray) {
      if (obj instanceof protobuf.Type) out.nested_type!.push(this.message(file, obj));
      else if (obj instanceof protobuf.Enum) out.enum_type!.push(this.enumType(obj));
      else if (obj instanceof protobuf.Field) out.extension!.push(this.extension(file, obj, t.fullName));
    }
    for (const f of fields) {
      if (!(f instanceof protobuf.MapField)) continue;
      const value = this.field(file, new protobuf.Field("value", 2, f.type), t.fullName, new Map());
      out.nested_type!.push({
        name: mapEntryName(f.name),
        field: [
          { name: "key", number: 1, label: "LABEL_OPTIONAL", type: SCALARS[f.keyType]!, json_name: "key" },
          { ...value, label: "LABEL_OPTIONAL" },
        ],
        options: { map_entry: true },
      });
    }
    return out;
  }

  private enumType(e: protobuf.Enum): EnumDescriptorProto {
    const options = (e.options ?? {}) as Record<string, unknown>;
    return {
      name: e.name,
      value: Object.entries(e.values).map(([name, number]) => ({ name, number })),
      ...(options.allow_alias === true ? { options: { allow_alias: true } } : {}),
      reserved_range: ranges(e.reserved, false),
      reserved_name: reservedNames(e.reserved),
    };
  }

  /** The method's `(google.api.http)` rule, checked field by field (protobufjs would drop typos). */
  private httpRule(file: string, m: protobuf.Method, where: string): HttpRuleProto | undefined {
    const entries = (m.parsedOptions ?? []).filter((o: Record<string, unknown>) => HTTP_OPTION in o);
    if (entries.length === 0) return undefined;
    if (!this.visible(file).has(ANNOTATIONS)) {
      this.problem(file, `${where}: option ${HTTP_OPTION} needs import "${ANNOTATIONS}"`);
      return undefined;
    }
    const rule = Object.assign({}, ...entries.map((o: Record<string, unknown>) => o[HTTP_OPTION]));
    const check = (r: Record<string, unknown>, at: string): HttpRuleProto => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(r)) {
        if (!this.httpFields.has(k)) {
          this.problem(file, `${at}: google.api.HttpRule has no field '${k}'`);
        } else if (k === "additional_bindings") {
          const list = Array.isArray(v) ? v : [v];
          out[k] = list.map((b, i) => check(b as Record<string, unknown>, `${at}.additional_bindings[${i}]`));
        } else out[k] = v;
      }
      return out as HttpRuleProto;
    };
    return check(rule, `${where} ${HTTP_OPTION}`);
  }

  private service(file: ParsedFile, s: protobuf.Service): ServiceDescriptorProto {
    return {
      name: s.name,
      method: s.methodsArray.map((m) => {
        const where = `${s.fullName.slice(1)}.${m.name}`;
        const input = this.resolve(file.name, m.requestType, s.fullName, ["message"]);
        const output = this.resolve(file.name, m.responseType, s.fullName, ["message"]);
        const rule = this.httpRule(file.name, m, where);
        const out: MethodDescriptorProto = {
          name: m.name,
          input_type: input?.full ?? "",
          output_type: output?.full ?? "",
          ...(m.requestStream ? { client_streaming: true } : {}),
          ...(m.responseStream ? { server_streaming: true } : {}),
          ...(rule ? { options: { ".google.api.http": rule } } : {}),
        };
        return out;
      }),
    };
  }

  fileDescriptor(f: ParsedFile): FileDescriptorProto {
    const out: FileDescriptorProto = {
      name: f.name,
      ...(f.pkg instanceof protobuf.Root ? {} : { package: f.pkg.fullName.slice(1) }),
      dependency: f.imports,
      public_dependency: f.publicImports.map((p) => f.imports.indexOf(p)).filter((i) => i >= 0),
      weak_dependency: f.weakImports.map((w) => f.imports.indexOf(w)),
      message_type: [],
      enum_type: [],
      service: [],
      extension: [],
      ...(f.syntax === "proto3" ? { syntax: "proto3" } : {}),
    };
    const scope = f.pkg instanceof protobuf.Root ? "" : f.pkg.fullName;
    for (const obj of f.pkg.nestedArray) {
      if (obj instanceof protobuf.Type) out.message_type!.push(this.message(f, obj));
      else if (obj instanceof protobuf.Service) out.service!.push(this.service(f, obj));
      else if (obj instanceof protobuf.Enum) out.enum_type!.push(this.enumType(obj));
      else if (obj instanceof protobuf.Field) out.extension!.push(this.extension(f, obj, scope));
    }
    return out;
  }

  /** Every file after the files it imports, as Envoy builds its descriptor pool. */
  ordered(): ParsedFile[] {
    const out: ParsedFile[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (name: string, path: string[]) => {
      const s = state.get(name);
      if (s === "done") return;
      if (s === "visiting") {
        this.problem(path[0]!, `import cycle: ${[...path.slice(path.indexOf(name)), name].join(" → ")}`);
        return;
      }
      const f = this.files.get(name);
      if (!f) return;
      state.set(name, "visiting");
      for (const imp of f.imports) visit(imp, [...path, name]);
      state.set(name, "done");
      out.push(f);
    };
    for (const name of Object.keys(this.uploaded).sort()) visit(name, []);
    return out;
  }
}

/** Compiles uploaded `.proto` files (name → text) into a serialized FileDescriptorSet. */
export function compileProtoFiles(uploaded: Record<string, string>): Compiled {
  const c = new Compiler(uploaded);
  c.load();
  if (c.problems.length > 0) return { ok: false, problems: c.problems };
  c.collectSymbols();
  const files = c.ordered();
  if (c.problems.length > 0) return { ok: false, problems: c.problems };
  const set = { file: files.map((f) => c.fileDescriptor(f)) };
  if (c.problems.length > 0) return { ok: false, problems: dedupe(c.problems) };
  return { ok: true, bytes: encodeFileDescriptorSet(set) };
}

function dedupe(problems: SourceProblem[]): SourceProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.file}\n${p.reason}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
