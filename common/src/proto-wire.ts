/**
 * The protobuf wire format, read and written by hand for the few messages on a hot path (Envoy's
 * ext_authz CheckRequest, the rate-limit service's RateLimitRequest): a codec that touches only the
 * fields a service reads is several times cheaper than a reflective decode followed by `toObject`.
 * Unknown fields are skipped, as protobuf requires; a truncated or malformed message throws a
 * `WireError` naming the offset.
 */

export class WireError extends Error {}

/** Wire types (the low three bits of a tag). */
export const WIRE = { varint: 0, fixed64: 1, bytes: 2, fixed32: 5 } as const;

/** A cursor over one message's bytes, or over a length-delimited part of them. */
export class WireReader {
  pos: number;
  end: number;

  constructor(
    readonly buf: Buffer,
    pos = 0,
    end = buf.length,
  ) {
    this.pos = pos;
    this.end = end;
  }

  /** A varint of up to 64 bits, as a Number (exact up to 2^53, as protobufjs gives `longs: Number`). */
  varint(): number {
    const buf = this.buf;
    const end = this.end;
    let pos = this.pos;
    if (pos >= end) throw new WireError(`truncated varint at offset ${pos}`);
    let b = buf[pos++]!;
    if (b < 0x80) {
      this.pos = pos;
      return b;
    }
    let result = b & 0x7f;
    let shift = 7;
    for (;;) {
      if (pos >= end) throw new WireError(`truncated varint at offset ${this.pos}`);
      b = buf[pos++]!;
      // Past 28 bits, bitwise operators would wrap: multiply instead.
      result += shift < 28 ? (b & 0x7f) << shift : (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
      shift += 7;
      if (shift > 63) throw new WireError(`varint longer than 10 bytes at offset ${this.pos}`);
    }
    this.pos = pos;
    return result;
  }

  /** The end of a length-delimited field that starts here; the cursor moves past the length. */
  delimited(): number {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.end)
      throw new WireError(`field of ${len} bytes at offset ${this.pos} runs past its message`);
    return end;
  }

  /** A length-delimited UTF-8 string. */
  string(): string {
    const end = this.delimited();
    const start = this.pos;
    this.pos = end;
    return start === end ? "" : this.buf.toString("utf8", start, end);
  }

  /** A length-delimited field's bytes, as a view (no copy). */
  bytes(): Buffer {
    const end = this.delimited();
    const start = this.pos;
    this.pos = end;
    return this.buf.subarray(start, end);
  }

  /** Skips the value of a field of this wire type. */
  skip(wireType: number): void {
    switch (wireType) {
      case WIRE.varint:
        this.varint();
        return;
      case WIRE.fixed64:
        this.pos += 8;
        break;
      case WIRE.bytes:
        this.pos = this.delimited();
        return;
      case WIRE.fixed32:
        this.pos += 4;
        break;
      default:
        throw new WireError(`wire type ${wireType} at offset ${this.pos} (groups are not supported)`);
    }
    if (this.pos > this.end) throw new WireError(`truncated fixed-width field before offset ${this.end}`);
  }
}

/** Bytes a varint takes. */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  let size = 5;
  for (let v = Math.floor(n / 2 ** 35); v > 0; v = Math.floor(v / 128)) size++;
  return size;
}

/**
 * Writes one message into a growing scratch buffer, reused from message to message;
 * `finish()` hands out a copy of exactly the bytes written. Nested messages are written in place
 * (`begin`/`end`): their length is filled in afterwards.
 */
export class WireWriter {
  private buf: Buffer;
  pos = 0;

  constructor(initialBytes = 1_024) {
    this.buf = Buffer.allocUnsafe(initialBytes);
  }

  reset(): this {
    this.pos = 0;
    return this;
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  varint(n: number): this {
    this.room(10);
    const buf = this.buf;
    let pos = this.pos;
    while (n >= 0x80) {
      buf[pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    buf[pos++] = n;
    this.pos = pos;
    return this;
  }

  /** A field's tag: its number and wire type. */
  tag(field: number, wireType: number): this {
    return this.varint(field * 8 + wireType);
  }

  /** A varint field (uint32, uint64, a non-negative int32 or enum). */
  uint(field: number, n: number): this {
    return this.tag(field, WIRE.varint).varint(n);
  }

  /** A string field; written even when empty (callers leave out defaults themselves). */
  string(field: number, s: string): this {
    this.tag(field, WIRE.bytes);
    if (s.length < 43) {
      // At most 126 bytes, so one byte of length: write the text first, then its length.
      this.room(127);
      const len = this.buf.write(s, this.pos + 1, "utf8");
      this.buf[this.pos] = len;
      this.pos += len + 1;
      return this;
    }
    const len = Buffer.byteLength(s, "utf8");
    this.varint(len);
    this.room(len);
    this.buf.write(s, this.pos, len, "utf8");
    this.pos += len;
    return this;
  }

  /** Bytes already encoded (a precomputed part of a message), copied in as they are. */
  raw(bytes: Uint8Array): this {
    this.room(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
    return this;
  }

  /** Starts a length-delimited field; returns what `end` needs. */
  begin(field: number): number {
    this.tag(field, WIRE.bytes);
    this.room(1);
    // One byte for the length, the common case; `end` moves the content if it needs more.
    this.pos += 1;
    return this.pos;
  }

  /** Ends the length-delimited field `begin` started, filling in its length. */
  end(start: number): this {
    const len = this.pos - start;
    const size = varintSize(len);
    if (size > 1) {
      this.room(size - 1);
      this.buf.copy(this.buf, start + size - 1, start, this.pos);
      this.pos += size - 1;
    }
    let pos = start - 1;
    let n = len;
    while (n >= 0x80) {
      this.buf[pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[pos] = n;
    return this;
  }

  /** A copy of the bytes written since the last reset. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    return out;
  }
}

/** Encodes once, for bytes that a compiled policy or config holds and copies into each answer. */
export function encodeOnce(write: (w: WireWriter) => void): Buffer {
  const w = new WireWriter(256);
  write(w);
  return w.finish();
}
