// A minimal ADS client for load: one HTTP/2 stream, gRPC framing by hand, and of every response
// only the fields an ACK needs (version, type URL, nonce). The resources' bytes are skipped as
// they arrive, never gathered into one buffer: a real Envoy decodes them on its own CPU, and here a
// thousand simulated Envoys share the control plane's two cores, so what they spend is taken from
// the server being measured. SotW and delta alike.
import { EventEmitter } from "node:events";
import http2 from "node:http2";
import {
  encodeDeltaDiscoveryRequest,
  encodeDiscoveryRequest,
  type ClientUpdate,
  type Node,
} from "@portico/common";
import type { XdsProtocol } from "@portico/envoy";

const ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService";
/** Envoy's HTTP/2 windows: a large response arrives without waiting for WINDOW_UPDATEs. */
const ENVOY_WINDOW = 256 * 1024 * 1024;
/** version_info / system_version_info, type_url and nonce: the same field numbers in both responses. */
const VERSION = 1;
const TYPE_URL = 4;
const NONCE = 5;

function framed(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(message.length + 5);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/**
 * Reads a stream of gRPC messages, each a DiscoveryResponse or DeltaDiscoveryResponse, keeping
 * fields 1, 4 and 5 (short strings) and skipping every other field's bytes without copying them.
 */
class HeaderReader {
  /** Bytes carried over from the previous chunk: at most a frame prefix or a field's key and length. */
  private carry: Buffer = Buffer.alloc(0);
  /** Bytes left in the current message; -1 between messages. */
  private messageLeft = -1;
  private messageBytes = 0;
  /** Bytes of the current field still to skip, or to gather when `gathering`. */
  private fieldLeft = 0;
  private gathering?: { field: number; parts: Buffer[] };
  private fields = new Map<number, string>();

  constructor(private readonly onMessage: (fields: Map<number, string>, bytes: number) => void) {}

  push(chunk: Buffer): void {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = Buffer.alloc(0);
    let at = 0;
    while (at < buf.length) {
      if (this.messageLeft < 0) {
        if (buf.length - at < 5) break;
        this.messageLeft = this.messageBytes = buf.readUInt32BE(at + 1);
        at += 5;
        this.fields = new Map();
        if (this.messageLeft === 0) this.finish();
        continue;
      }
      if (this.fieldLeft > 0) {
        const n = Math.min(this.fieldLeft, buf.length - at);
        if (this.gathering) this.gathering.parts.push(buf.subarray(at, at + n));
        at += n;
        this.fieldLeft -= n;
        this.messageLeft -= n;
        if (this.fieldLeft === 0) this.fieldDone();
        continue;
      }
      // A field's key and, for length-delimited fields, its length: both varints.
      const start = at;
      const key = readVarint(buf, at);
      if (!key) break;
      at = key.next;
      const wire = key.value & 7;
      let length = 0;
      if (wire === 2) {
        const len = readVarint(buf, at);
        if (!len) {
          at = start;
          break;
        }
        at = len.next;
        length = len.value;
      } else if (wire === 0) {
        const v = readVarint(buf, at);
        if (!v) {
          at = start;
          break;
        }
        at = v.next;
      } else {
        length = wire === 1 ? 8 : wire === 5 ? 4 : 0;
      }
      this.messageLeft -= at - start;
      const field = key.value >>> 3;
      this.fieldLeft = length;
      this.gathering =
        wire === 2 && (field === VERSION || field === TYPE_URL || field === NONCE)
          ? { field, parts: [] }
          : undefined;
      if (length === 0) this.fieldDone();
    }
    if (at < buf.length) this.carry = Buffer.from(buf.subarray(at));
  }

  private fieldDone(): void {
    if (this.gathering)
      this.fields.set(this.gathering.field, Buffer.concat(this.gathering.parts).toString("utf8"));
    this.gathering = undefined;
    if (this.messageLeft === 0) this.finish();
  }

  private finish(): void {
    this.messageLeft = -1;
    this.onMessage(this.fields, this.messageBytes);
  }
}

function readVarint(buf: Buffer, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let shift = 0;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return { value, next: i + 1 };
    shift += 7;
  }
  return undefined;
}

interface Sub {
  names: string[];
  version: string;
  nonce: string;
}

/** The part of XdsClient's surface the simulated fleet uses. */
export class AdsLoadClient extends EventEmitter<{ update: [ClientUpdate]; error: [Error] }> {
  private readonly session: http2.ClientHttp2Session;
  private readonly ownsSession: boolean;
  private readonly stream: http2.ClientHttp2Stream;
  private readonly subs = new Map<string, Sub>();
  private first = true;
  private closed = false;

  constructor(
    private readonly opts: {
      target: string;
      node: Node;
      protocol: XdsProtocol;
      /** A session to open the stream on (several clients on one connection), else its own. */
      session?: http2.ClientHttp2Session;
    },
  ) {
    super();
    this.ownsSession = !opts.session;
    this.session = opts.session ?? connect(opts.target);
    if (this.ownsSession) this.session.on("error", (err) => this.fail(err));
    const delta = opts.protocol === "delta";
    this.stream = this.session.request({
      ":method": "POST",
      ":path": `${ADS}/${delta ? "DeltaAggregatedResources" : "StreamAggregatedResources"}`,
      "content-type": "application/grpc",
      te: "trailers",
    });
    const reader = new HeaderReader((fields, bytes) => this.onResponse(fields, bytes));
    this.stream.on("data", (chunk: Buffer) => reader.push(chunk));
    this.stream.on("error", (err) => this.fail(err));
    this.stream.on("trailers", (t) => {
      if (t["grpc-status"] !== "0")
        this.fail(new Error(`stream ended: ${t["grpc-status"]} ${t["grpc-message"] ?? ""}`));
    });
  }

  private fail(err: Error): void {
    if (!this.closed) this.emit("error", err);
  }

  private send(req: object): void {
    const withNode = this.first ? { ...req, node: this.opts.node } : req;
    this.first = false;
    const body =
      this.opts.protocol === "delta"
        ? encodeDeltaDiscoveryRequest(withNode)
        : encodeDiscoveryRequest(withNode);
    this.stream.write(framed(body));
  }

  /** Subscribes to a type: all of it (no names) or the named resources. */
  subscribe(typeUrl: string, names: string[] = []): void {
    const sub: Sub = { names, version: "", nonce: "" };
    this.subs.set(typeUrl, sub);
    if (this.opts.protocol === "delta")
      this.send({ type_url: typeUrl, resource_names_subscribe: names.length === 0 ? ["*"] : names });
    else this.send({ type_url: typeUrl, resource_names: names });
  }

  private onResponse(fields: Map<number, string>, bytes: number): void {
    const typeUrl = fields.get(TYPE_URL) ?? "";
    const sub = this.subs.get(typeUrl);
    if (!sub) return;
    sub.version = fields.get(VERSION) ?? "";
    sub.nonce = fields.get(NONCE) ?? "";
    if (this.opts.protocol === "delta") this.send({ type_url: typeUrl, response_nonce: sub.nonce });
    else
      this.send({
        type_url: typeUrl,
        version_info: sub.version,
        response_nonce: sub.nonce,
        resource_names: sub.names,
      });
    this.emit("update", {
      typeUrl,
      version: sub.version,
      nonce: sub.nonce,
      resources: [],
      removed: [],
      bytes,
    });
  }

  close(): void {
    this.closed = true;
    this.stream.close();
    if (this.ownsSession) this.session.close();
  }
}

/** A connection as an Envoy opens it: Envoy's windows, no TLS (the bench's xDS is on loopback). */
export function connect(target: string): http2.ClientHttp2Session {
  const session = http2.connect(`http://${target}`, {
    settings: { initialWindowSize: ENVOY_WINDOW },
  });
  session.once("connect", () => session.setLocalWindowSize(ENVOY_WINDOW));
  return session;
}
