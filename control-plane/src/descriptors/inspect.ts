/**
 * Checks a serialized FileDescriptorSet the way Envoy's transcoder will use it, and lists its
 * services. Envoy does not refuse a set it cannot build a descriptor pool from (a missing import,
 * an unknown type): it logs the error and the routes stop transcoding. So every such problem is
 * found here, before the set is stored.
 */
import type { SourceProblem } from "./compile.js";
import { parseTemplate } from "./http-template.js";
import {
  decodeFileDescriptorSet,
  type DescriptorProto,
  type FileDescriptorSet,
  type HttpRuleProto,
} from "./wire.js";

export interface HttpBinding {
  method: string;
  path: string;
  body?: string;
}

export interface MethodSummary {
  name: string;
  input: string;
  output: string;
  bindings: HttpBinding[];
}

export interface DescriptorSummary {
  /** Service full name (`pkg.Service`) → its methods. */
  services: Map<string, MethodSummary[]>;
}

export type Inspected = { ok: true; summary: DescriptorSummary } | { ok: false; problems: SourceProblem[] };

const PATTERNS = ["get", "put", "post", "delete", "patch"] as const;

function bindingsOf(rule: HttpRuleProto): { binding?: HttpBinding; reason?: string }[] {
  const set = PATTERNS.filter((p) => rule[p] !== undefined && rule[p] !== "");
  const custom = rule.custom?.path ? rule.custom : undefined;
  const count = set.length + (custom ? 1 : 0);
  const one =
    count !== 1
      ? { reason: "give exactly one of get, put, post, delete, patch or custom" }
      : {
          binding: custom
            ? { method: custom.kind ?? "", path: custom.path!, body: rule.body }
            : { method: set[0]!.toUpperCase(), path: rule[set[0]!]!, body: rule.body },
        };
  return [one, ...(rule.additional_bindings ?? []).flatMap(bindingsOf)];
}

export function inspectDescriptorSet(bytes: Uint8Array): Inspected {
  let set: FileDescriptorSet;
  try {
    set = decodeFileDescriptorSet(bytes);
  } catch (err) {
    return {
      ok: false,
      problems: [{ file: "", reason: `not a serialized FileDescriptorSet (${(err as Error).message})` }],
    };
  }
  const problems: SourceProblem[] = [];
  const files = set.file ?? [];
  if (files.length === 0) problems.push({ file: "", reason: "the set holds no files" });
  const names = new Set<string>();
  for (const f of files) {
    if (!f.name) problems.push({ file: "", reason: "a file in the set has no name" });
    else if (names.has(f.name)) problems.push({ file: f.name, reason: "is in the set twice" });
    names.add(f.name);
  }
  for (const f of files) {
    for (const dep of f.dependency ?? []) {
      if (!names.has(dep)) {
        problems.push({
          file: f.name,
          reason: `imports ${dep}, which the set does not hold (build it with protoc --include_imports)`,
        });
      }
    }
  }

  const messages = new Map<string, DescriptorProto>();
  const enums = new Set<string>();
  const collect = (prefix: string, list: DescriptorProto[] | undefined) => {
    for (const m of list ?? []) {
      const full = `${prefix}.${m.name}`;
      messages.set(full, m);
      for (const e of m.enum_type ?? []) enums.add(`${full}.${e.name}`);
      collect(full, m.nested_type);
    }
  };
  for (const f of files) {
    const pkg = f.package ? `.${f.package}` : "";
    collect(pkg, f.message_type);
    for (const e of f.enum_type ?? []) enums.add(`${pkg}.${e.name}`);
  }
  const checkFields = (file: string, owner: string, m: DescriptorProto) => {
    for (const field of [...(m.field ?? []), ...(m.extension ?? [])]) {
      const t = field.type_name;
      if (t === undefined || t === "") continue;
      const known = field.type === "TYPE_ENUM" ? enums.has(t) : messages.has(t);
      if (!known)
        problems.push({
          file,
          reason: `field ${owner ? `${owner}.` : ""}${field.name} refers to unknown type ${t}`,
        });
    }
    for (const nested of m.nested_type ?? []) checkFields(file, `${owner}.${nested.name}`, nested);
  };
  for (const f of files) {
    const pkg = f.package ? `${f.package}.` : "";
    for (const m of f.message_type ?? []) checkFields(f.name, `${pkg}${m.name}`, m);
    // File-level extensions, such as annotations.proto's `(google.api.http)`.
    checkFields(f.name, pkg.slice(0, -1), { name: "", field: f.extension });
  }

  /** The field a binding's variable or body names, through nested messages (`book.id`). */
  const fieldPathProblem = (type: string, path: string): string | undefined => {
    let msg = messages.get(type);
    for (const part of path.split(".")) {
      const field = msg?.field?.find((f) => f.name === part);
      if (!msg || !field) return `${type.slice(1)} has no field '${path}'`;
      msg = field.type === "TYPE_MESSAGE" ? messages.get(field.type_name ?? "") : undefined;
    }
    return undefined;
  };

  const services = new Map<string, MethodSummary[]>();
  for (const f of files) {
    for (const s of f.service ?? []) {
      const full = f.package ? `${f.package}.${s.name}` : s.name;
      const methods: MethodSummary[] = [];
      for (const m of s.method ?? []) {
        const where = `${full}.${m.name}`;
        for (const [what, type] of [
          ["input", m.input_type],
          ["output", m.output_type],
        ] as const) {
          if (!messages.has(type))
            problems.push({ file: f.name, reason: `${where}: unknown ${what} type ${type}` });
        }
        const rule = m.options?.[".google.api.http"];
        const bindings: HttpBinding[] = [];
        for (const { binding, reason } of rule ? bindingsOf(rule) : []) {
          if (!binding) {
            problems.push({ file: f.name, reason: `${where} (google.api.http): ${reason}` });
            continue;
          }
          const at = `${where} (google.api.http) ${binding.method} ${binding.path}`;
          const parsed = parseTemplate(binding.path);
          if (!parsed.ok) {
            problems.push({ file: f.name, reason: `${at}: the path ${parsed.reason}` });
            continue;
          }
          if (!messages.has(m.input_type)) continue;
          for (const v of parsed.variables) {
            const p = fieldPathProblem(m.input_type, v);
            if (p) problems.push({ file: f.name, reason: `${at}: ${p}` });
          }
          if (binding.body && binding.body !== "*") {
            const p = fieldPathProblem(m.input_type, binding.body);
            if (p) problems.push({ file: f.name, reason: `${at}: body: ${p}` });
          }
          bindings.push(binding);
        }
        methods.push({
          name: m.name,
          input: m.input_type.slice(1),
          output: m.output_type.slice(1),
          bindings,
        });
      }
      services.set(full, methods);
    }
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, summary: { services } };
}
