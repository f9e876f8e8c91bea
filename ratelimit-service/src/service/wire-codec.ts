/**
 * ShouldRateLimit's request and answer in wire bytes, written by hand: the request's domain,
 * descriptor entries, request-carried limits and hits, and an answer whose shared parts (a rule's
 * `current_limit`, the constant statuses) are encoded once. The reflective protobufjs codec in
 * `codec.ts` stays for clients (tests, tools) and as the reference these are tested against.
 */
import { encodeOnce, WIRE, WireReader, WireWriter } from "@portico/common";
import type {
  Code,
  DescriptorStatus,
  ProtoUnit,
  RateLimitDescriptor,
  RateLimitRequest,
  RateLimitResponse,
} from "./codec.js";

const LEN = WIRE.bytes;
const VARINT = WIRE.varint;
const tag = (field: number, wireType: number) => (field << 3) | wireType;

// envoy/service/ratelimit/v3/rls.proto RateLimitRequest
const REQUEST_DOMAIN = tag(1, LEN);
const REQUEST_DESCRIPTORS = tag(2, LEN);
const REQUEST_HITS_ADDEND = tag(3, VARINT);
// envoy/extensions/common/ratelimit/v3/ratelimit.proto RateLimitDescriptor
const DESCRIPTOR_ENTRIES = tag(1, LEN);
const DESCRIPTOR_LIMIT = tag(2, LEN);
const DESCRIPTOR_HITS_ADDEND = tag(3, LEN);
const ENTRY_KEY = tag(1, LEN);
const ENTRY_VALUE = tag(2, LEN);
const OVERRIDE_REQUESTS_PER_UNIT = tag(1, VARINT);
const OVERRIDE_UNIT = tag(2, VARINT);
// google/protobuf/wrappers.proto UInt64Value
const WRAPPER_VALUE = tag(1, VARINT);

/** envoy.type.v3.RateLimitUnit, the unit of a request-carried limit (it has no WEEK). */
const REQUEST_UNITS: readonly ProtoUnit[] = ["UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "YEAR"];

/**
 * A RateLimitRequest from its bytes, as the protobufjs decode with defaults gives it (absent
 * strings empty, absent lists empty, absent messages left out). Throws `WireError` on bytes that
 * are no RateLimitRequest.
 */
export function decodeRateLimitRequest(buf: Buffer): RateLimitRequest {
  const r = new WireReader(buf);
  const req: RateLimitRequest = { domain: "", descriptors: [], hits_addend: 0 };
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === REQUEST_DESCRIPTORS) req.descriptors.push(within(r, descriptor));
    else if (t === REQUEST_DOMAIN) req.domain = r.string();
    else if (t === REQUEST_HITS_ADDEND) req.hits_addend = r.varint() % 2 ** 32;
    else r.skip(t & 7);
  }
  return req;
}

/** Reads the length-delimited message at the cursor with `read`, bounded by its length. */
function within<T>(r: WireReader, read: (r: WireReader) => T): T {
  const end = r.delimited();
  const outer = r.end;
  r.end = end;
  const value = read(r);
  r.pos = end;
  r.end = outer;
  return value;
}

function descriptor(r: WireReader): RateLimitDescriptor {
  const d: RateLimitDescriptor = { entries: [] };
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === DESCRIPTOR_ENTRIES) d.entries.push(within(r, entry));
    else if (t === DESCRIPTOR_LIMIT) d.limit = within(r, override);
    else if (t === DESCRIPTOR_HITS_ADDEND) d.hits_addend = within(r, uint64Value);
    else r.skip(t & 7);
  }
  return d;
}

function entry(r: WireReader): { key: string; value: string } {
  let key = "";
  let value = "";
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === ENTRY_KEY) key = r.string();
    else if (t === ENTRY_VALUE) value = r.string();
    else r.skip(t & 7);
  }
  return { key, value };
}

function override(r: WireReader): NonNullable<RateLimitDescriptor["limit"]> {
  let requests = 0;
  let unit: ProtoUnit = "UNKNOWN";
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === OVERRIDE_REQUESTS_PER_UNIT) requests = r.varint() % 2 ** 32;
    else if (t === OVERRIDE_UNIT) unit = REQUEST_UNITS[r.varint()] ?? "UNKNOWN";
    else r.skip(t & 7);
  }
  return { requests_per_unit: requests, unit };
}

function uint64Value(r: WireReader): { value: number } {
  let value = 0;
  while (r.pos < r.end) {
    const t = r.varint();
    if (t === WRAPPER_VALUE) value = r.varint();
    else r.skip(t & 7);
  }
  return { value };
}

// RateLimitResponse
const RESPONSE_OVERALL_CODE = 1;
const RESPONSE_STATUSES = 2;
const RESPONSE_HEADERS_TO_ADD = 3;
const STATUS_CODE = 1;
const STATUS_CURRENT_LIMIT = 2;
const STATUS_LIMIT_REMAINING = 3;
const STATUS_DURATION_UNTIL_RESET = 4;
const LIMIT_REQUESTS_PER_UNIT = 1;
const LIMIT_UNIT = 2;
const LIMIT_NAME = 3;
const DURATION_SECONDS = 1;
const DURATION_NANOS = 2;
const HEADER_KEY = 1;
const HEADER_VALUE = 2;

const CODES: Readonly<Record<Code, number>> = { UNKNOWN: 0, OK: 1, OVER_LIMIT: 2 };
/** RateLimitResponse.RateLimit.Unit, which has WEEK (7). */
const RESPONSE_UNITS: Readonly<Record<ProtoUnit, number>> = {
  UNKNOWN: 0,
  SECOND: 1,
  MINUTE: 2,
  HOUR: 3,
  DAY: 4,
  MONTH: 5,
  YEAR: 6,
  WEEK: 7,
};

const writer = new WireWriter(4_096);
/** Encoded once: a rule's `current_limit` (shared by its statuses), and frozen statuses whole. */
const limitBytes = new WeakMap<object, Buffer>();
const statusBytes = new WeakMap<object, Buffer>();

/** The RateLimitResponse's bytes. */
export function encodeRateLimitResponse(res: RateLimitResponse): Buffer {
  const w = writer.reset();
  w.uint(RESPONSE_OVERALL_CODE, CODES[res.overall_code]);
  for (const s of res.statuses) {
    if (Object.isFrozen(s)) {
      let bytes = statusBytes.get(s);
      if (!bytes) statusBytes.set(s, (bytes = encodeOnce((x) => writeStatus(x, s))));
      w.raw(bytes);
    } else writeStatus(w, s);
  }
  for (const h of res.response_headers_to_add ?? []) {
    const at = w.begin(RESPONSE_HEADERS_TO_ADD);
    if (h.key) w.string(HEADER_KEY, h.key);
    if (h.value) w.string(HEADER_VALUE, h.value);
    w.end(at);
  }
  return w.finish();
}

function writeStatus(w: WireWriter, s: DescriptorStatus): void {
  const at = w.begin(RESPONSE_STATUSES);
  if (s.code !== "UNKNOWN") w.uint(STATUS_CODE, CODES[s.code]);
  const limit = s.current_limit;
  if (limit) {
    // A limit object is built once per rule (see `toStatus`): shared, so encoded once.
    if (Object.isFrozen(limit)) {
      let bytes = limitBytes.get(limit);
      if (!bytes) limitBytes.set(limit, (bytes = encodeOnce((x) => writeLimit(x, limit))));
      w.raw(bytes);
    } else writeLimit(w, limit);
  }
  w.uint(STATUS_LIMIT_REMAINING, s.limit_remaining);
  const reset = s.duration_until_reset;
  if (reset) {
    const d = w.begin(STATUS_DURATION_UNTIL_RESET);
    if (reset.seconds) w.uint(DURATION_SECONDS, reset.seconds);
    if (reset.nanos) w.uint(DURATION_NANOS, reset.nanos);
    w.end(d);
  }
  w.end(at);
}

function writeLimit(w: WireWriter, limit: NonNullable<DescriptorStatus["current_limit"]>): void {
  const at = w.begin(STATUS_CURRENT_LIMIT);
  w.uint(LIMIT_REQUESTS_PER_UNIT, limit.requests_per_unit);
  if (limit.unit !== "UNKNOWN") w.uint(LIMIT_UNIT, RESPONSE_UNITS[limit.unit]);
  if (limit.name) w.string(LIMIT_NAME, limit.name);
  w.end(at);
}
