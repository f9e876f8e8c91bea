import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { loadProtoRoot } from "@portico/contract";

export const RLS_SERVICE = "envoy.service.ratelimit.v3.RateLimitService";
export const SHOULD_RATE_LIMIT_PATH = `/${RLS_SERVICE}/ShouldRateLimit`;

export type Code = "UNKNOWN" | "OK" | "OVER_LIMIT";
export type ProtoUnit = "UNKNOWN" | "SECOND" | "MINUTE" | "HOUR" | "DAY" | "WEEK" | "MONTH" | "YEAR";

export interface RateLimitDescriptor {
  entries: { key: string; value: string }[];
  limit?: { requests_per_unit: number; unit: ProtoUnit } | null;
  /** Overrides the request's hits_addend for this descriptor; 0 asks without counting. */
  hits_addend?: { value: number } | null;
}

export interface RateLimitRequest {
  domain: string;
  descriptors: RateLimitDescriptor[];
  hits_addend?: number;
}

export interface DescriptorStatus {
  code: Code;
  current_limit?: { name?: string; requests_per_unit: number; unit: ProtoUnit };
  limit_remaining: number;
  duration_until_reset?: { seconds: number; nanos?: number };
}

export interface RateLimitResponse {
  overall_code: Code;
  statuses: DescriptorStatus[];
  response_headers_to_add?: { key: string; value: string }[];
}

let root: protobuf.Root | undefined;

function rlsRoot(): protobuf.Root {
  root ??= loadProtoRoot(["envoy/service/ratelimit/v3/rls.proto"]);
  return root;
}

const DECODE = { longs: Number, enums: String, defaults: true, arrays: true } as const;

export function messageTypes(): { request: protobuf.Type; response: protobuf.Type } {
  const r = rlsRoot();
  return {
    request: r.lookupType("envoy.service.ratelimit.v3.RateLimitRequest"),
    response: r.lookupType("envoy.service.ratelimit.v3.RateLimitResponse"),
  };
}

export function rateLimitServiceDefinition(): grpc.ServiceDefinition {
  const { request, response } = messageTypes();
  return {
    ShouldRateLimit: {
      path: SHOULD_RATE_LIMIT_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: (m: RateLimitRequest) => Buffer.from(request.encode(request.fromObject(m)).finish()),
      requestDeserialize: (b: Buffer) => request.toObject(request.decode(b), DECODE) as RateLimitRequest,
      responseSerialize: (m: RateLimitResponse) =>
        Buffer.from(response.encode(response.fromObject(m)).finish()),
      responseDeserialize: (b: Buffer) => response.toObject(response.decode(b), DECODE) as RateLimitResponse,
    },
  };
}

export interface RateLimitClient {
  shouldRateLimit(req: RateLimitRequest, opts?: { deadlineMs?: number }): Promise<RateLimitResponse>;
  close(): void;
}

/** A client of the ShouldRateLimit service, as Envoy calls it (tests, benchmarks, tools). */
export function createRateLimitClient(
  address: string,
  credentials = grpc.credentials.createInsecure(),
): RateLimitClient {
  const Ctor = grpc.makeGenericClientConstructor(rateLimitServiceDefinition(), "RateLimitService");
  const client = new Ctor(address, credentials) as unknown as grpc.Client & {
    ShouldRateLimit(
      req: RateLimitRequest,
      options: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: RateLimitResponse) => void,
    ): void;
  };
  return {
    shouldRateLimit: (req, opts = {}) =>
      new Promise((resolve, reject) =>
        client.ShouldRateLimit(req, { deadline: Date.now() + (opts.deadlineMs ?? 5_000) }, (err, res) =>
          err ? reject(err) : resolve(res!),
        ),
      ),
    close: () => client.close(),
  };
}
