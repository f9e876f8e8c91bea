import type * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { messageType } from "@portico/contract";

export interface Node {
  id: string;
  cluster: string;
  user_agent_name?: string;
  user_agent_version?: string;
  user_agent_build_version?: { version?: { major_number?: number; minor_number?: number; patch?: number } };
  metadata?: unknown;
}

export interface Status {
  code?: number;
  message?: string;
}

export interface DiscoveryRequest {
  version_info: string;
  node?: Node;
  resource_names: string[];
  type_url: string;
  response_nonce: string;
  error_detail?: Status;
}

export interface DeltaDiscoveryRequest {
  node?: Node;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail?: Status;
}

const toObjectOpts = { longs: Number, enums: String, defaults: true, arrays: true, objects: true };

export function decodeDiscoveryRequest(buf: Buffer): DiscoveryRequest {
  const t = messageType("envoy.service.discovery.v3.DiscoveryRequest");
  return t.toObject(t.decode(buf), toObjectOpts) as DiscoveryRequest;
}

export function decodeDeltaDiscoveryRequest(buf: Buffer): DeltaDiscoveryRequest {
  const t = messageType("envoy.service.discovery.v3.DeltaDiscoveryRequest");
  return t.toObject(t.decode(buf), toObjectOpts) as DeltaDiscoveryRequest;
}

export function encodeDiscoveryRequest(req: Partial<DiscoveryRequest>): Buffer {
  const t = messageType("envoy.service.discovery.v3.DiscoveryRequest");
  return Buffer.from(t.encode(t.fromObject(req)).finish());
}

export function encodeDeltaDiscoveryRequest(req: Partial<DeltaDiscoveryRequest>): Buffer {
  const t = messageType("envoy.service.discovery.v3.DeltaDiscoveryRequest");
  return Buffer.from(t.encode(t.fromObject(req)).finish());
}

export const CONTROL_PLANE_ID = "portico";

/**
 * The nonce-free part of a SotW `DiscoveryResponse`: version_info = 1, resources = 2,
 * type_url = 4, control_plane = 6. Protobuf fields may come in any order, so the per-stream nonce
 * (field 5) is appended to this shared body without re-encoding the resources.
 */
export function encodeSotwBody(
  version: string,
  typeUrl: string,
  resources: Iterable<Uint8Array>,
): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(version);
  for (const any of resources) w.uint32((2 << 3) | 2).bytes(any);
  w.uint32((4 << 3) | 2).string(typeUrl);
  w.uint32((6 << 3) | 2)
    .fork()
    .uint32((1 << 3) | 2)
    .string(CONTROL_PLANE_ID)
    .ldelim();
  return w.finish();
}

export function withNonce(body: Uint8Array, nonceField: number, nonce: string): Buffer {
  const tail = protobuf.Writer.create()
    .uint32((nonceField << 3) | 2)
    .string(nonce)
    .finish();
  return Buffer.concat([body, tail]);
}

/**
 * A `DeltaDiscoveryResponse` without its nonce (system_version_info = 1, resources = 2,
 * type_url = 4, removed_resources = 6, control_plane = 7): one body serves every stream that
 * sends the same change, each appending its own nonce (field 5) with `withNonce`.
 */
export function encodeDeltaBody(
  systemVersion: string,
  typeUrl: string,
  resources: readonly Uint8Array[],
  removed: readonly string[],
): Uint8Array {
  const w = protobuf.Writer.create();
  w.uint32((1 << 3) | 2).string(systemVersion);
  for (const r of resources) w.uint32((2 << 3) | 2).bytes(r);
  w.uint32((4 << 3) | 2).string(typeUrl);
  for (const name of removed) w.uint32((6 << 3) | 2).string(name);
  w.uint32((7 << 3) | 2)
    .fork()
    .uint32((1 << 3) | 2)
    .string(CONTROL_PLANE_ID)
    .ldelim();
  return w.finish();
}

export function decodeDiscoveryResponse(buf: Uint8Array): {
  version_info: string;
  resources: { type_url: string; value: Uint8Array }[];
  type_url: string;
  nonce: string;
} {
  const t = messageType("envoy.service.discovery.v3.DiscoveryResponse");
  return t.toObject(t.decode(buf), toObjectOpts) as any;
}

export function decodeDeltaDiscoveryResponse(buf: Uint8Array): {
  system_version_info: string;
  resources: { name: string; version: string; resource?: { type_url: string; value: Uint8Array } }[];
  removed_resources: string[];
  type_url: string;
  nonce: string;
} {
  const t = messageType("envoy.service.discovery.v3.DeltaDiscoveryResponse");
  return t.toObject(t.decode(buf), toObjectOpts) as any;
}

const identity = (b: Buffer): Buffer => b;

function streamMethod(path: string, delta: boolean): grpc.MethodDefinition<any, Buffer> {
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: delta ? encodeDeltaDiscoveryRequest : encodeDiscoveryRequest,
    requestDeserialize: delta ? decodeDeltaDiscoveryRequest : decodeDiscoveryRequest,
    // Responses are assembled from pre-encoded resources, so they are already bytes.
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

export interface XdsServiceSpec {
  /** Fully qualified gRPC service name. */
  service: string;
  sotwMethod: string;
  deltaMethod: string;
  /** The one type a per-type service serves; undefined for ADS. */
  typeUrl?: string;
}

export function serviceDefinition(spec: XdsServiceSpec): grpc.ServiceDefinition {
  return {
    [spec.sotwMethod]: streamMethod(`/${spec.service}/${spec.sotwMethod}`, false),
    [spec.deltaMethod]: streamMethod(`/${spec.service}/${spec.deltaMethod}`, true),
  } as grpc.ServiceDefinition;
}
