/**
 * `google.protobuf.FileDescriptorSet` on the wire. The types come from descriptor.proto together
 * with google/api/annotations.proto, so `MethodOptions` knows its `(google.api.http)` extension:
 * the HTTP rules Envoy's transcoder reads are encoded and decoded like any other field.
 */
import type protobuf from "protobufjs";
import { loadProtoRoot } from "@portico/contract";

/** The JSON-ish shape of `google.api.HttpRule` (snake_case, as in http.proto). */
export interface HttpRuleProto {
  selector?: string;
  get?: string;
  put?: string;
  post?: string;
  delete?: string;
  patch?: string;
  custom?: { kind?: string; path?: string };
  body?: string;
  response_body?: string;
  additional_bindings?: HttpRuleProto[];
}

export interface FieldDescriptorProto {
  name: string;
  number: number;
  label: "LABEL_OPTIONAL" | "LABEL_REQUIRED" | "LABEL_REPEATED";
  type: string;
  type_name?: string;
  extendee?: string;
  default_value?: string;
  oneof_index?: number;
  json_name?: string;
  options?: { packed?: boolean };
  proto3_optional?: boolean;
}

export interface EnumDescriptorProto {
  name: string;
  value: { name: string; number: number }[];
  options?: { allow_alias?: boolean };
  reserved_range?: { start: number; end: number }[];
  reserved_name?: string[];
}

export interface DescriptorProto {
  name: string;
  field?: FieldDescriptorProto[];
  extension?: FieldDescriptorProto[];
  nested_type?: DescriptorProto[];
  enum_type?: EnumDescriptorProto[];
  extension_range?: { start: number; end: number }[];
  oneof_decl?: { name: string }[];
  options?: { map_entry?: boolean };
  reserved_range?: { start: number; end: number }[];
  reserved_name?: string[];
}

export interface MethodDescriptorProto {
  name: string;
  input_type: string;
  output_type: string;
  client_streaming?: boolean;
  server_streaming?: boolean;
  options?: { ".google.api.http"?: HttpRuleProto };
}

export interface ServiceDescriptorProto {
  name: string;
  method?: MethodDescriptorProto[];
}

export interface FileDescriptorProto {
  name: string;
  package?: string;
  dependency?: string[];
  public_dependency?: number[];
  weak_dependency?: number[];
  message_type?: DescriptorProto[];
  enum_type?: EnumDescriptorProto[];
  service?: ServiceDescriptorProto[];
  extension?: FieldDescriptorProto[];
  syntax?: string;
}

export interface FileDescriptorSet {
  file: FileDescriptorProto[];
}

let root: protobuf.Root | undefined;

function descriptorRoot(): protobuf.Root {
  root ??= loadProtoRoot(["google/protobuf/descriptor.proto", "google/api/annotations.proto"]);
  return root;
}

function setType(): protobuf.Type {
  return descriptorRoot().lookupType("google.protobuf.FileDescriptorSet");
}

/** The names of `google.api.HttpRule`'s fields, to refuse an option naming one that does not exist. */
export function httpRuleFieldNames(): string[] {
  return Object.keys(descriptorRoot().lookupType("google.api.HttpRule").fields);
}

export function encodeFileDescriptorSet(set: FileDescriptorSet): Uint8Array {
  const type = setType();
  return type.encode(type.fromObject(set)).finish();
}

/** Decodes a serialized set; throws (protobufjs' message) on bytes that are not one. */
export function decodeFileDescriptorSet(bytes: Uint8Array): FileDescriptorSet {
  const type = setType();
  return type.toObject(type.decode(bytes), {
    enums: String,
    longs: Number,
    arrays: true,
    defaults: false,
  }) as FileDescriptorSet;
}
