/**
 * What the JSON body of a transcoded REST call may hold: for each HTTP binding of a route's
 * services, the message its body fills, and for each such message the fields JSON may name.
 * Envoy's transcoder drops a field no message has without a word; the gateway refuses such a body
 * with these shapes (translate/features/transcoding.ts) unless the route allows unknown fields.
 */
import {
  decodeFileDescriptorSet,
  type DescriptorProto,
  type FieldDescriptorProto,
} from "../descriptors/wire.js";

/**
 * What a JSON value may be: `0` anything (a scalar, or a type whose JSON is free-form: Struct,
 * Value, Any, wrappers, Timestamp…), a message's full name (an object of its fields, or an array
 * of them), or a map (an object of any keys whose values are the given shape).
 */
export type ValueShape = 0 | string | { map: ValueShape };

/** A message's fields by every name JSON may give them: the JSON name and the name in the `.proto`. */
export type MessageShape = Readonly<Record<string, ValueShape>>;

/** One HTTP binding whose request carries a body. */
export interface BodyBinding {
  readonly method: string;
  /** The path template's segments: literals, `*` (one segment) or `**` (the rest). */
  readonly segments: readonly string[];
  /** The custom verb (`:publish`), if any. */
  readonly verb?: string;
  /** What the whole body is. */
  readonly shape: ValueShape;
}

export interface BodyShapes {
  readonly bindings: readonly BodyBinding[];
  readonly messages: Readonly<Record<string, MessageShape>>;
}

/** Message types whose JSON is not an object of their fields. */
const FREE_FORM = new Set(
  [
    "Struct",
    "Value",
    "ListValue",
    "Any",
    "Timestamp",
    "Duration",
    "FieldMask",
    "DoubleValue",
    "FloatValue",
    "Int64Value",
    "UInt64Value",
    "Int32Value",
    "UInt32Value",
    "BoolValue",
    "StringValue",
    "BytesValue",
  ].map((n) => `.google.protobuf.${n}`),
);

/** protoc's json_name: underscores dropped, the letter after one upper-cased. */
const jsonName = (name: string) => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The template's segments and verb: `/v1/{name=shelves/*}/books:publish` → v1, shelves, *, books; publish. */
export function templateSegments(template: string): { segments: string[]; verb?: string } {
  let rest = template.slice(1);
  let verb: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("}") && colon > rest.lastIndexOf("/")) {
    verb = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const path = rest.replace(
    /\{([^}=]*)(?:=([^}]*))?\}/g,
    (_, _field: string, pattern?: string) => pattern ?? "*",
  );
  return { segments: path.split("/").filter((s) => s !== ""), ...(verb !== undefined ? { verb } : {}) };
}

/** The shapes of the bodies `services` take, from a serialized FileDescriptorSet. */
export function bodyShapes(bytes: Uint8Array, services: readonly string[]): BodyShapes {
  const set = decodeFileDescriptorSet(bytes);
  const types = new Map<string, DescriptorProto>();
  const collect = (prefix: string, list: DescriptorProto[] | undefined) => {
    for (const m of list ?? []) {
      types.set(`${prefix}.${m.name}`, m);
      collect(`${prefix}.${m.name}`, m.nested_type);
    }
  };
  for (const f of set.file ?? []) collect(f.package ? `.${f.package}` : "", f.message_type);

  const messages: Record<string, MessageShape> = {};
  const fieldShape = (f: FieldDescriptorProto): ValueShape => {
    if (f.type !== "TYPE_MESSAGE" || !f.type_name) return 0;
    const entry = types.get(f.type_name);
    if (entry?.options?.map_entry) {
      const value = entry.field?.find((x) => x.number === 2);
      return { map: value ? fieldShape(value) : 0 };
    }
    return messageShape(f.type_name);
  };
  const messageShape = (name: string): ValueShape => {
    const m = types.get(name);
    if (!m || FREE_FORM.has(name)) return 0;
    if (!(name in messages)) {
      const fields: Record<string, ValueShape> = {};
      messages[name] = fields; // before the fields, so a message that holds itself ends here
      for (const f of m.field ?? []) {
        const shape = fieldShape(f);
        fields[f.name] = shape;
        fields[f.json_name ?? jsonName(f.name)] = shape;
      }
    }
    return name;
  };
  /** The shape of the field a body names (`book`, `shelf.book`), in the request's message. */
  const bodyShape = (input: string, body: string): ValueShape => {
    if (body === "*") return messageShape(input);
    let shape: ValueShape = 0;
    let type: string | undefined = input;
    for (const part of body.split(".")) {
      const f: FieldDescriptorProto | undefined = types.get(type ?? "")?.field?.find((x) => x.name === part);
      if (!f) return 0;
      shape = fieldShape(f);
      type = f.type === "TYPE_MESSAGE" ? f.type_name : undefined;
    }
    return shape;
  };

  const wanted = new Set(services);
  const bindings: BodyBinding[] = [];
  for (const file of set.file ?? []) {
    for (const s of file.service ?? []) {
      if (!wanted.has(file.package ? `${file.package}.${s.name}` : s.name)) continue;
      for (const m of s.method ?? []) {
        const rules = [m.options?.[".google.api.http"]];
        for (let i = 0; i < rules.length; i++) {
          const rule = rules[i];
          if (!rule) continue;
          rules.push(...(rule.additional_bindings ?? []));
          if (!rule.body) continue;
          const verbs = ["get", "put", "post", "delete", "patch"] as const;
          const method = verbs.find((v) => rule[v]);
          const path = method ? rule[method]! : rule.custom?.path;
          if (!path) continue;
          bindings.push({
            method: method ? method.toUpperCase() : (rule.custom?.kind ?? ""),
            ...templateSegments(path),
            shape: bodyShape(m.input_type, rule.body),
          });
        }
      }
    }
  }
  return { bindings, messages };
}
