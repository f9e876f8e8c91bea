import { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import {
  decodeDeltaDiscoveryResponse,
  decodeDiscoveryResponse,
  encodeDeltaDiscoveryRequest,
  encodeDiscoveryRequest,
  type DeltaDiscoveryRequest,
  type DiscoveryRequest,
  type Node,
} from "./xds-codec.js";

export interface ClientResource {
  name: string;
  version: string;
  /** The packed resource (type URL and encoded message). */
  any: { type_url: string; value: Uint8Array };
}

export interface ClientUpdate {
  typeUrl: string;
  version: string;
  nonce: string;
  /** For SotW the full set for this type; for delta only what changed. */
  resources: ClientResource[];
  removed: string[];
  bytes: number;
}

export interface XdsClientOptions {
  target: string;
  node: Node;
  protocol: "sotw" | "delta";
  /**
   * Called with each response before it is applied. Throwing refuses it (a NACK carrying the
   * error's message); the client keeps what it had.
   */
  validate?: (update: ClientUpdate) => void;
  credentials?: grpc.ChannelCredentials;
  /** Reconnect after the stream ends (policy services); off for one-shot tools. */
  reconnect?: boolean;
}

interface Subscription {
  names: Set<string>;
  wildcard: boolean;
  version: string;
  nonce: string;
  resources: Map<string, ClientResource>;
}

const ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService";

/**
 * A small ADS client, SotW or delta. Portico's policy services use it to receive their config
 * from the control plane the way Envoy does (versioned, ACKed, NACKed with a reason), and the
 * benchmarks use it to simulate a fleet.
 */
export class XdsClient extends EventEmitter<{
  update: [ClientUpdate];
  nack: [ClientUpdate, string];
  error: [Error];
  connected: [];
  disconnected: [];
}> {
  private readonly client: grpc.Client;
  private call?: grpc.ClientDuplexStream<any, Buffer>;
  private readonly subs = new Map<string, Subscription>();
  private closed = false;
  private firstMessage = true;
  private retryMs = 250;

  constructor(private readonly opts: XdsClientOptions) {
    super();
    this.client = new grpc.Client(opts.target, opts.credentials ?? grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 256 * 1024 * 1024,
      "grpc.keepalive_time_ms": 30_000,
    });
    this.open();
  }

  private open(): void {
    const delta = this.opts.protocol === "delta";
    const path = `${ADS}/${delta ? "DeltaAggregatedResources" : "StreamAggregatedResources"}`;
    const call = this.client.makeBidiStreamRequest<any, Buffer>(
      path,
      delta ? encodeDeltaDiscoveryRequest : encodeDiscoveryRequest,
      (b: Buffer) => b,
    );
    this.call = call;
    this.firstMessage = true;
    call.on("data", (buf: Buffer) => {
      this.retryMs = 250;
      try {
        if (delta) this.onDelta(buf);
        else this.onSotw(buf);
      } catch (err) {
        this.emit("error", err as Error);
      }
    });
    call.on("error", (err) => {
      if (!this.closed) this.emit("error", err);
    });
    // A call that never connected ends with `status` but no `close`: either one ends the stream.
    let ended = false;
    const onEnd = () => {
      if (ended || this.call !== call) return;
      ended = true;
      this.emit("disconnected");
      if (!this.closed && this.opts.reconnect) {
        setTimeout(() => !this.closed && this.reopen(), this.retryMs).unref();
        this.retryMs = Math.min(this.retryMs * 2, 5_000);
      }
    };
    call.on("status", onEnd);
    call.on("close", onEnd);
    this.emit("connected");
  }

  private reopen(): void {
    this.open();
    for (const [typeUrl, sub] of this.subs) {
      if (this.opts.protocol === "delta") {
        const initial: Record<string, string> = {};
        for (const r of sub.resources.values()) initial[r.name] = r.version;
        this.sendDelta({
          type_url: typeUrl,
          resource_names_subscribe: sub.wildcard ? ["*", ...sub.names] : [...sub.names],
          initial_resource_versions: initial,
        });
      } else {
        this.sendSotw({ type_url: typeUrl, version_info: sub.version, resource_names: [...sub.names] });
      }
    }
  }

  /** Subscribes to a type: all of it (no names) or the named resources. */
  subscribe(typeUrl: string, names: string[] = []): void {
    let sub = this.subs.get(typeUrl);
    const fresh = !sub;
    if (!sub) {
      sub = { names: new Set(), wildcard: names.length === 0, version: "", nonce: "", resources: new Map() };
      this.subs.set(typeUrl, sub);
    }
    for (const n of names) sub.names.add(n);
    if (this.opts.protocol === "delta") {
      this.sendDelta({ type_url: typeUrl, resource_names_subscribe: fresh && sub.wildcard ? ["*"] : names });
    } else {
      this.sendSotw({
        type_url: typeUrl,
        version_info: sub.version,
        response_nonce: sub.nonce,
        resource_names: [...sub.names],
      });
    }
  }

  unsubscribe(typeUrl: string, names: string[]): void {
    const sub = this.subs.get(typeUrl);
    if (!sub) return;
    for (const n of names) {
      sub.names.delete(n);
      sub.resources.delete(n);
    }
    if (this.opts.protocol === "delta") {
      this.sendDelta({ type_url: typeUrl, resource_names_unsubscribe: names });
    } else {
      this.sendSotw({
        type_url: typeUrl,
        version_info: sub.version,
        response_nonce: sub.nonce,
        resource_names: [...sub.names],
      });
    }
  }

  resources(typeUrl: string): Map<string, ClientResource> {
    return new Map(this.subs.get(typeUrl)?.resources ?? []);
  }

  version(typeUrl: string): string {
    return this.subs.get(typeUrl)?.version ?? "";
  }

  /** Sends a raw request on the stream (tests use it to exercise protocol corners). */
  sendRaw(req: Partial<DiscoveryRequest> | Partial<DeltaDiscoveryRequest>): void {
    if (this.opts.protocol === "delta") this.sendDelta(req as Partial<DeltaDiscoveryRequest>);
    else this.sendSotw(req as Partial<DiscoveryRequest>);
  }

  private withNode<T extends object>(req: T): T & { node?: Node } {
    if (!this.firstMessage) return req;
    this.firstMessage = false;
    return { ...req, node: this.opts.node };
  }

  private sendSotw(req: Partial<DiscoveryRequest>): void {
    this.call?.write(this.withNode(req));
  }

  private sendDelta(req: Partial<DeltaDiscoveryRequest>): void {
    this.call?.write(this.withNode(req));
  }

  private check(update: ClientUpdate): string | undefined {
    try {
      this.opts.validate?.(update);
      return undefined;
    } catch (err) {
      return (err as Error).message || String(err);
    }
  }

  private onSotw(buf: Buffer): void {
    const res = decodeDiscoveryResponse(buf);
    const sub = this.subs.get(res.type_url);
    if (!sub) return;
    const resources: ClientResource[] = res.resources.map((any) => ({
      name: resourceName(any),
      version: res.version_info,
      any,
    }));
    const update: ClientUpdate = {
      typeUrl: res.type_url,
      version: res.version_info,
      nonce: res.nonce,
      resources,
      removed: [],
      bytes: buf.length,
    };
    const error = this.check(update);
    if (error) {
      this.sendSotw({
        type_url: res.type_url,
        version_info: sub.version,
        response_nonce: res.nonce,
        resource_names: [...sub.names],
        error_detail: { code: grpc.status.INVALID_ARGUMENT, message: error },
      });
      sub.nonce = res.nonce;
      this.emit("nack", update, error);
      return;
    }
    sub.version = res.version_info;
    sub.nonce = res.nonce;
    sub.resources = new Map(resources.map((r) => [r.name, r]));
    this.sendSotw({
      type_url: res.type_url,
      version_info: res.version_info,
      response_nonce: res.nonce,
      resource_names: [...sub.names],
    });
    this.emit("update", update);
  }

  private onDelta(buf: Buffer): void {
    const res = decodeDeltaDiscoveryResponse(buf);
    const sub = this.subs.get(res.type_url);
    if (!sub) return;
    const resources: ClientResource[] = res.resources.map((r) => ({
      name: r.name,
      version: r.version,
      any: r.resource ?? { type_url: res.type_url, value: new Uint8Array() },
    }));
    const update: ClientUpdate = {
      typeUrl: res.type_url,
      version: res.system_version_info,
      nonce: res.nonce,
      resources,
      removed: res.removed_resources,
      bytes: buf.length,
    };
    const error = this.check(update);
    if (error) {
      this.sendDelta({
        type_url: res.type_url,
        response_nonce: res.nonce,
        error_detail: { code: grpc.status.INVALID_ARGUMENT, message: error },
      });
      this.emit("nack", update, error);
      return;
    }
    for (const r of resources) sub.resources.set(r.name, r);
    for (const n of res.removed_resources) sub.resources.delete(n);
    sub.version = res.system_version_info;
    sub.nonce = res.nonce;
    this.sendDelta({ type_url: res.type_url, response_nonce: res.nonce });
    this.emit("update", update);
  }

  close(): void {
    this.closed = true;
    this.call?.end();
    this.call?.cancel();
    this.client.close();
  }
}

/**
 * Reads the length-delimited string fields wanted from a message without decoding the rest:
 * resource names for the client's bookkeeping, and response headers for load generators.
 */
function readStrings(buf: Uint8Array, wanted: readonly number[]): Map<number, string> {
  const out = new Map<number, string>();
  const reader = protobuf.Reader.create(buf);
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    const wire = tag & 7;
    if (wire === 2 && wanted.includes(field) && !out.has(field)) out.set(field, reader.string());
    else reader.skipType(wire);
  }
  return out;
}

/** Every xDS resource type keeps its name in field 1 (ClusterLoadAssignment: cluster_name). */
function resourceName(any: { type_url: string; value: Uint8Array }): string {
  return readStrings(any.value, [1]).get(1) ?? "";
}
