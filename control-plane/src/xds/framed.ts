import { createRequire } from "node:module";

/**
 * gRPC messages framed once (the 5-byte length prefix and the body) and written as they are to
 * every stream that sends them. grpc-js frames each message it writes into a new buffer, which
 * for one route table of 10,000 routes pushed to 1,000 Envoys is 350 MiB allocated and copied per
 * change; a buffer made by `framed` skips that and goes to the HTTP/2 stream by reference.
 *
 * grpc-js has no public way to write a framed message, so its server call's framing step is
 * wrapped to pass these buffers through. When the installed grpc-js has no such step (a version
 * that moved it), nothing is wrapped and `framed` returns the body, which grpc-js frames as usual.
 */
const preFramed = new WeakSet<Buffer>();

function wrapFraming(): boolean {
  try {
    const serverCalls = createRequire(import.meta.url)("@grpc/grpc-js/build/src/server-interceptors.js") as {
      BaseServerInterceptingCall?: { prototype: { serializeMessage?: (value: unknown) => Buffer } };
    };
    const proto = serverCalls.BaseServerInterceptingCall?.prototype;
    const frame = proto?.serializeMessage;
    if (!proto || typeof frame !== "function") return false;
    proto.serializeMessage = function (this: unknown, value: unknown): Buffer {
      return Buffer.isBuffer(value) && preFramed.has(value) ? value : frame.call(this, value);
    };
    return true;
  } catch {
    return false;
  }
}

/** Whether messages are framed here (true with the grpc-js this package is built against). */
export const FRAMED_WRITES = wrapFraming();

/** The message to write for `body`: framed for gRPC once, or `body` itself where grpc-js frames. */
export function framed(body: Uint8Array): Buffer {
  if (!FRAMED_WRITES) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const out = Buffer.allocUnsafe(body.byteLength + 5);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(body.byteLength, 1);
  out.set(body, 5);
  preFramed.add(out);
  return out;
}
