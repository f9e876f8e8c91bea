import { z } from "zod";
// The policy kinds (providers, consumers, API keys, auth and rate-limit policies, composite routes)
// are the contract's schemas: ext-authz, the rate limiter and the aggregator read the same ones.
import {
  ApiKeySchema,
  AuthPolicySchema,
  CompositePartSchema as ContractCompositePartSchema,
  CompositeRouteSchema as ContractCompositeRouteSchema,
  ConsumerSchema,
  JwtProviderSchema,
  Name,
  OauthProviderSchema,
  RateLimitPolicySchema,
  RateLimitSchema,
  RetrySchema as ContractRetrySchema,
  Millis,
} from "@portico/contract";

export {
  ApiKeySchema,
  AuthPolicySchema,
  ConsumerSchema,
  JwtProviderSchema,
  Name,
  OauthProviderSchema,
  RateLimitPolicySchema,
  RateLimitSchema,
};

const retryFields = ContractRetrySchema.shape;

/**
 * Retries by Envoy (a route's `retry_policy`, a composite part's too): the contract's fields, each
 * saying what Envoy does with it, and the count named for what it counts. `attempts` is the old
 * name of `maxRetries`, with the same meaning; a stored config carries `maxRetries`.
 */
export const RetrySchema = ContractRetrySchema.extend({
  maxRetries: z
    .number()
    .int()
    .min(1)
    .max(10)
    .optional()
    .meta({
      description:
        "Retries after the first try (Envoy's `num_retries`): 2 means at most 3 calls to the upstream. " +
        "Each retry goes to another endpoint when there is one, and counts against the upstream's " +
        "circuitBreaker.maxConcurrentRetries.",
      examples: [2],
    }),
  attempts: retryFields.attempts.optional().meta({
    deprecated: true,
    description: "The old name of maxRetries, with the same meaning (retries after the first try).",
  }),
  on: retryFields.on.meta({
    description:
      "What makes Envoy retry (`retry_on`): 5xx (any 5xx answer, a reset, a refused connection), " +
      "gateway-error (502, 503, 504), reset, connect-failure, retriable-4xx (409), refused-stream, " +
      "retriable-status-codes (the statusCodes listed).",
    examples: [["5xx", "reset", "connect-failure"]],
  }),
  perTryTimeoutMs: retryFields.perTryTimeoutMs.meta({
    description:
      "Deadline of each try (`per_try_timeout`); a try that passes it is retried. Without it a try may " +
      "take the whole route timeoutMs, which also bounds all tries together.",
    examples: [500],
  }),
  statusCodes: retryFields.statusCodes.meta({
    description: "The answers retried with `retriable-status-codes` (`retriable_status_codes`).",
    examples: [[503, 429]],
  }),
  backoff: retryFields.backoff.meta({
    description:
      "Pause before each retry (`retry_back_off`): random, up to baseMs doubled at each retry, at most " +
      "maxMs (default 10 × baseMs). Envoy's default is a 25 ms base.",
    examples: [{ baseMs: 25, maxMs: 250 }],
  }),
})
  .refine((r) => (r.maxRetries === undefined) !== (r.attempts === undefined), {
    message:
      "give maxRetries, the number of retries after the first try (attempts is its old name; not both)",
  })
  .transform(({ attempts, maxRetries, ...rest }) => ({ ...rest, maxRetries: (maxRetries ?? attempts)! }));

/** A composite part, with retries as routes take them. */
export const CompositePartSchema = ContractCompositePartSchema.extend({
  retries: RetrySchema.optional(),
});

/** One client call fanned out to several upstreams by the aggregator, the answers merged into one. */
export const CompositeRouteSchema = ContractCompositeRouteSchema.extend({
  parts: z.array(CompositePartSchema).min(1, "a composite route needs at least one part").max(32),
});

const Port = z.number().int("must be a whole number").min(1, "must be 1-65535").max(65535, "must be 1-65535");
/** RFC 7230 token characters; Envoy refuses anything else in a header name. */
export const HeaderName = z
  .string()
  .regex(/^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "not a valid HTTP header name")
  .transform((s) => s.toLowerCase());
const HeaderValue = z.string().regex(/^[^\r\n\0]*$/, "header values cannot contain CR, LF or NUL");
const Hostname = z
  .string()
  .regex(
    /^(\*\.)?[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:\d+)?$|^\*$/,
    "a hostname, optionally *.suffix or with :port",
  );

export const ListenerSchema = z
  .object({
    name: Name,
    port: Port,
    /** Address to bind; 0.0.0.0 for every interface. */
    address: z.string().min(1).default("0.0.0.0"),
    protocol: z.enum(["http", "https"]).default("http"),
    /** Hostnames this listener answers for (SNI and virtual hosts); every host when omitted. */
    hostnames: z.array(Hostname).optional(),
    /** The certificate for `https` listeners (the default when no SNI certificate matches). */
    certificate: Name.optional(),
    /** Certificates chosen by SNI: each for the hostnames it lists (exact or `*.suffix`). */
    sniCertificates: z
      .array(z.object({ hostnames: z.array(Hostname).min(1), certificate: Name }).strict())
      .optional(),
    /**
     * Keep an `x-request-id` the client sent (default), or always make a new one (for listeners
     * facing clients whose ids should not reach upstream logs). A missing id is always generated.
     */
    requestId: z.enum(["keep", "regenerate"]).default("keep"),
    /** The response header that hands the request's id back to the client; `false` for none. */
    returnRequestId: z
      .union([HeaderName, z.literal(false)])
      .default("x-request-id")
      .meta({
        description:
          "The response header that carries the request's id back to the client, on every answer: the " +
          "upstream's, and the gateway's own errors (whose JSON bodies also carry it as request_id). " +
          "false: the id is not returned.",
        examples: ["x-request-id", "x-correlation-id", false],
      }),
    /** Largest request header block, in KiB; larger requests get 431. Envoy's default is 60. */
    maxRequestHeadersKb: z.number().int().min(1).max(8192).optional(),
    /** Largest request body on this listener's routes, in bytes; larger requests get 413. */
    maxBodyBytes: z.number().int().min(1).max(1_073_741_824).optional(),
    /**
     * Keep the `x-portico-*` identity headers a request arrives with. Every other listener removes
     * them on arrival. Only a listener that proves its callers are gateways (`gatewayIdentity`),
     * or that binds to loopback alone, may set it: otherwise any peer on the network could claim
     * any consumer.
     */
    trustIdentityHeaders: z
      .boolean()
      .default(false)
      .meta({
        description:
          "Keep the x-portico-* identity headers a request arrives with (every other listener removes " +
          "them), so the identity the edge authenticated reaches the service behind a sidecar. Needs " +
          "gatewayIdentity, or an address on loopback (127.0.0.1, ::1).",
        examples: [true],
      }),
    /**
     * Accept only other Envoys of the fleet, proven by mTLS: the listener serves TLS with this
     * Envoy's own gateway certificate and requires a client certificate from the internal CA naming
     * a gateway (`spiffe://portico/gateway/<group>`).
     */
    gatewayIdentity: z
      .boolean()
      .optional()
      .meta({
        description:
          "mTLS from gateways only (a service's sidecar behind the edge): the listener presents this " +
          "Envoy's own certificate (the bootstrap's static secret `portico-gateway-identity`) and " +
          "accepts only clients whose certificate the internal CA (`portico-internal-ca`) signed and " +
          "whose URI SAN starts with spiffe://portico/gateway/. Needs protocol https and no " +
          "certificate or sniCertificates. Upstreams calling it set tls.gatewayIdentity.",
        examples: [true],
      }),
  })
  .strict();

/** How a gateway's Envoys call Portico's ext-authz service (the `ext_authz` HTTP filter). */
export const GatewayExtAuthzSchema = z
  .object({
    /** The upstream (protocol `grpc`) where ext-authz listens. */
    upstream: Name,
    /** Envoy's deadline for one Check call; Envoy's own default is 200 ms. */
    timeoutMs: z.number().int().min(1).max(10_000).default(200),
    /** Let requests through when ext-authz cannot answer (`failure_mode_allow`). Off: fail closed. */
    failOpen: z.boolean().default(false),
    /** The status Envoy answers with when ext-authz cannot answer and `failOpen` is off. */
    statusOnError: z.number().int().min(400).max(599).default(503),
    /**
     * Who verifies the JWTs of routes that accept nothing else: Envoy itself (`jwt_authn` with the
     * keys the control plane fetched, then Portico's checks in a Lua filter, refusing exactly what
     * ext-authz refuses, in its words) or a call to ext-authz. `auto` (default): Envoy wherever it
     * can, ext-authz for the rest, each route's choice and its reason in the status. `jwt_authn`:
     * the same, but a JWT-only route Envoy cannot serve is refused when written. `ext_authz`: every
     * route calls ext-authz.
     */
    jwt: z
      .enum(["auto", "ext_authz", "jwt_authn"])
      .default("auto")
      .meta({
        description:
          "Who verifies the JWTs of routes that accept only JWTs: auto (default) lets Envoy verify them " +
          "(jwt_authn with keys the control plane fetches and pins, then the same checks and refusals as " +
          "ext-authz, with no call out) wherever the route allows it, and ext-authz the others; jwt_authn " +
          "does the same but refuses a config where a JWT-only route cannot be verified by Envoy; ext_authz " +
          "sends every route to ext-authz. GET /api/v1/status shows each route's choice and why.",
        examples: ["auto"],
      }),
  })
  .strict();

/** How a gateway's Envoys call Portico's rate-limit service (the `ratelimit` HTTP filter). */
export const GatewayRateLimitSchema = z
  .object({
    /** The upstream (protocol `grpc`) where the rate-limit service listens. */
    upstream: Name,
    /** The rate-limit domain of this gateway's descriptors; the gateway's name when omitted. */
    domain: Name.optional(),
    /** Envoy's deadline for one ShouldRateLimit call; envoyproxy/ratelimit deployments use 20 ms. */
    timeoutMs: z.number().int().min(1).max(10_000).default(20),
    /** Refuse requests when the service cannot answer (`failure_mode_deny`). Off: fail open. */
    failClosed: z.boolean().default(false),
  })
  .strict();

/** Where a gateway's composite routes are served (Portico's aggregator), and how it calls their parts. */
export const GatewayAggregatorSchema = z
  .object({
    /** The upstream (protocol `http1` or `http2`) where the aggregator listens. */
    upstream: Name,
    /**
     * The listener through which the aggregator calls the parts, so each part's cluster applies its
     * retries, circuit breakers, TLS and outlier detection. It serves only calls carrying the
     * gateway's parts token, which Envoy gives the aggregator alone; keep it on loopback (the
     * default) all the same.
     */
    partsListener: z.object({ address: z.string().min(1).default("127.0.0.1"), port: Port }).strict(),
    /**
     * The secret Envoy hands the aggregator with each composite call and the parts listener
     * requires back, so only the aggregator reaches the parts. The control plane makes one when
     * it is omitted and keeps it across writes; it is never shown by reads.
     */
    partsToken: z
      .string()
      .min(32, "at least 32 characters")
      .max(256)
      .regex(/^[\x21-\x7e]+$/, "printable ASCII without spaces")
      .optional(),
  })
  .strict();

/** OpenTelemetry traces from a gateway's Envoys (Envoy's `envoy.tracers.opentelemetry`). */
export const GatewayTracingSchema = z
  .object({
    /** The upstream (protocol `grpc`) of an OTLP collector; Envoy sends its spans there over OTLP/gRPC. */
    upstream: Name,
    /**
     * Share of requests, 0-100, that start a trace. A request arriving with a `traceparent` follows
     * its caller's decision instead, so a trace begun upstream of the gateway stays whole.
     */
    samplingPercent: z.number().min(0).max(100).default(100),
    /** `service.name` of Envoy's spans; the gateway's name when omitted. */
    serviceName: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[^\r\n\0]*$/, "cannot contain CR, LF or NUL")
      .optional(),
  })
  .strict();

/** Where a gateway's Envoys write their JSON access log. */
export const GatewayAccessLogSchema = z
  .object({
    /** A file (absolute path, on each Envoy's machine) instead of Envoy's stdout. */
    path: z
      .string()
      .startsWith("/", "must be an absolute path")
      .max(4096)
      .regex(/^[^\r\n\0]*$/, "cannot contain CR, LF or NUL"),
  })
  .strict();

export const GatewaySchema = z
  .object({
    /** The gateway group: Envoys whose `node.cluster` is this name receive this gateway's config. */
    name: Name,
    listeners: z.array(ListenerSchema).min(1, "a gateway needs at least one listener"),
    /** Needed by routes with an `authPolicy`. */
    extAuthz: GatewayExtAuthzSchema.optional(),
    /** Needed by routes with a `rateLimitPolicy`. */
    rateLimit: GatewayRateLimitSchema.optional(),
    /**
     * Where refusals and answers of limited routes carry `X-RateLimit-Limit`, `-Remaining` and
     * `-Reset` (draft 03). `exact` (default): only numbers that hold for the whole group, so on
     * every answer the rate-limit service counts (its count is the group's) and a route's `local`
     * bucket (each Envoy's own by definition), and on refusals only where each Envoy counts its
     * share (the limit as configured, 0, the seconds until a request is admitted again). `always`:
     * on every answer, also where Envoys count, which then describe the answering Envoy's bucket
     * (its share: 100/s on two Envoys reads `50`), except in a group where the rate-limit service
     * counts too, whose headers would come on top of them. `off`: none; refusals keep
     * `Retry-After`.
     */
    rateLimitHeaders: z
      .enum(["exact", "always", "off"])
      .default("exact")
      .meta({
        description:
          "X-RateLimit-Limit, -Remaining and -Reset (draft 03) on limited routes. exact (default): where the " +
          "rate-limit service counts, on every answer; where each Envoy counts its share, on refusals only, " +
          "with the limit as configured. always: on every answer, where Envoys count describing the answering " +
          "Envoy's share of the limit. off: none (refusals keep Retry-After).",
        examples: ["exact"],
      }),
    /** Needed by composite routes. */
    aggregator: GatewayAggregatorSchema.optional(),
    /** OpenTelemetry traces; none when omitted. */
    tracing: GatewayTracingSchema.optional(),
    /** The JSON access log goes to Envoy's stdout unless a file is given. */
    accessLog: GatewayAccessLogSchema.optional(),
  })
  .strict();

export const EndpointSchema = z
  .object({
    host: z.string().min(1, "must not be empty"),
    port: Port,
    weight: z.number().int().min(1).max(128).optional(),
  })
  .strict();

/** Active health checks (Envoy's `health_checks`): every Envoy asks every endpoint on its own. */
export const HealthCheckSchema = z
  .object({
    path: z
      .string()
      .startsWith("/", "must start with '/'")
      .default("/healthz")
      .meta({ description: "Asked with GET; any 2xx is healthy.", examples: ["/healthz"] }),
    intervalMs: Millis(3_600_000)
      .default(5_000)
      .meta({ description: "Time between two checks of one endpoint.", examples: [5000] }),
    timeoutMs: Millis(60_000)
      .default(1_000)
      .meta({ description: "A check not answered in this time failed.", examples: [1000] }),
    unhealthyThreshold: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(3)
      .meta({
        description:
          "Failed checks in a row that take an endpoint out of the load balancing; with 3 and a 5 s interval, " +
          "a dead endpoint still gets traffic for up to 15 s.",
        examples: [3],
      }),
    healthyThreshold: z
      .number()
      .int()
      .min(1)
      .max(100)
      .default(2)
      .meta({ description: "Passed checks in a row that bring it back.", examples: [2] }),
  })
  .strict()
  .meta({
    description:
      "Active health checks. Until an endpoint's first check passes it takes traffic as usual; an endpoint that " +
      "fails is skipped until it passes again. Passive detection is outlierDetection.",
  });

const Count = (max = 1_000_000) => z.number().int().min(1).max(max);

/**
 * Concurrency limits of an upstream (Envoy's `circuit_breakers`), each per Envoy process and per
 * upstream, across its endpoints. The fields are named for what Envoy counts; the old names
 * (`maxRequests`, `maxPendingRequests`, `maxRetries`) still work and are stored under the new ones.
 */
export const CircuitBreakerSchema = z
  .object({
    maxConnections: Count()
      .optional()
      .meta({
        description:
          "Open connections to the upstream at once (`max_connections`, default 1024). Over it, an HTTP/1.1 " +
          "request waits for a free connection (see maxRequestsWaitingForConnection).",
        examples: [100],
      }),
    maxConcurrentRequests: Count()
      .optional()
      .meta({
        description:
          "Requests in flight to the upstream at once (`max_requests`, default 1024). The next one is refused " +
          "at once with 503 (flag UO); it does not wait. With 1, one of 10 parallel requests goes through.",
        examples: [200],
      }),
    maxRequestsWaitingForConnection: Count()
      .optional()
      .meta({
        description:
          "Requests waiting for a connection when maxConnections are all busy (`max_pending_requests`, default " +
          "1024); the next one is refused with 503. It is no queue for maxConcurrentRequests: a request over " +
          "that limit never waits.",
        examples: [50],
      }),
    maxConcurrentRetries: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .optional()
      .meta({
        description:
          "Retries in flight to the upstream at once (`max_retries`, default 3), whatever the routes' " +
          "retries.maxRetries; a retry over it is not made and the failed answer goes to the client.",
        examples: [3],
      }),
    maxRequests: Count()
      .optional()
      .meta({ deprecated: true, description: "The old name of maxConcurrentRequests." }),
    maxPendingRequests: Count()
      .optional()
      .meta({ deprecated: true, description: "The old name of maxRequestsWaitingForConnection." }),
    maxRetries: z
      .number()
      .int()
      .min(0)
      .max(1_000_000)
      .optional()
      .meta({ deprecated: true, description: "The old name of maxConcurrentRetries." }),
  })
  .strict()
  .superRefine((cb, ctx) => {
    for (const [now, old] of CIRCUIT_BREAKER_RENAMES) {
      if (cb[now] !== undefined && cb[old] !== undefined)
        ctx.addIssue({ code: "custom", path: [old], message: `the old name of ${now}; give only ${now}` });
    }
  })
  .transform((cb) => {
    const out: CircuitBreakerFields = {};
    if (cb.maxConnections !== undefined) out.maxConnections = cb.maxConnections;
    for (const [now, old] of CIRCUIT_BREAKER_RENAMES) {
      const value = cb[now] ?? cb[old];
      if (value !== undefined) out[now] = value;
    }
    return out;
  });

type CircuitBreakerFields = {
  maxConnections?: number;
  maxConcurrentRequests?: number;
  maxRequestsWaitingForConnection?: number;
  maxConcurrentRetries?: number;
};

const CIRCUIT_BREAKER_RENAMES = [
  ["maxConcurrentRequests", "maxRequests"],
  ["maxRequestsWaitingForConnection", "maxPendingRequests"],
  ["maxConcurrentRetries", "maxRetries"],
] as const;

/** Passive detection (Envoy's `outlier_detection`): endpoints that fail the calls they get are ejected. */
export const OutlierDetectionSchema = z
  .object({
    consecutive5xx: z
      .number()
      .int()
      .min(1)
      .default(5)
      .meta({
        description:
          "Failed calls in a row that eject an endpoint at once (`consecutive_5xx`): a 5xx answer, a refused " +
          "or reset connection, a timeout.",
        examples: [5],
      }),
    intervalMs: Millis(3_600_000)
      .default(10_000)
      .meta({
        description: "How often ejected endpoints are looked at to return (`interval`).",
        examples: [10000],
      }),
    baseEjectionMs: Millis(3_600_000)
      .default(30_000)
      .meta({
        description:
          "How long an ejection lasts (`base_ejection_time`), times the number of times the endpoint was " +
          "ejected before.",
        examples: [30000],
      }),
    maxEjectionPercent: z
      .number()
      .int()
      .min(0)
      .max(100)
      .default(50)
      .meta({
        description:
          "Share of the endpoints that may be ejected at once (`max_ejection_percent`); with one endpoint, " +
          "below 100 means it is never ejected.",
        examples: [50],
      }),
  })
  .strict();

export const UpstreamTlsSchema = z
  .object({
    /** SNI and the name checked in the upstream's certificate. */
    sni: z.string().min(1).optional(),
    /** A certificate resource whose `caPem` verifies the upstream; unverified when omitted. */
    ca: Name.optional(),
    /** A certificate resource presented to the upstream (mTLS). */
    clientCertificate: Name.optional(),
    gatewayIdentity: z
      .boolean()
      .optional()
      .meta({
        description:
          "mTLS between internal parts (ext-authz, the rate limiter): Envoy presents its own gateway " +
          "certificate (spiffe://portico/gateway/<group>, the bootstrap's static secret " +
          "`portico-gateway-identity`) and verifies the upstream with the internal CA (static secret " +
          "`portico-internal-ca`). Each Envoy needs those in its bootstrap (`identity`), or it refuses " +
          "the cluster. Excludes `ca` and `clientCertificate`.",
        examples: [true],
      }),
  })
  .strict()
  .meta({
    description:
      "TLS to the upstream: `sni` is sent and, with a CA, checked as a DNS name in its certificate " +
      "(default: the first endpoint's host, when it is a name); `ca` and `clientCertificate` name " +
      "certificate resources, or `gatewayIdentity` uses the gateway's own identity and the internal CA.",
  });

export const UpstreamSchema = z
  .object({
    name: Name,
    endpoints: z.array(EndpointSchema).min(1, "an upstream needs at least one endpoint"),
    protocol: z.enum(["http1", "http2", "grpc"]).default("http1"),
    loadBalancing: z
      .enum(["round_robin", "least_request", "random", "ring_hash", "maglev"])
      .default("round_robin"),
    connectTimeoutMs: z
      .number()
      .int()
      .min(1)
      .max(60_000)
      .default(1_000)
      .meta({
        description:
          "Deadline to open a connection (`connect_timeout`); past it the try fails as a connect failure " +
          "(503, retried by retries.on connect-failure or 5xx).",
        examples: [1000],
      }),
    healthCheck: HealthCheckSchema.optional(),
    circuitBreaker: CircuitBreakerSchema.optional(),
    outlierDetection: OutlierDetectionSchema.optional(),
    tls: UpstreamTlsSchema.optional(),
  })
  .strict();

const StringMatchSchema = z
  .object({
    name: HeaderName,
    exact: z.string().optional(),
    prefix: z.string().optional(),
    regex: z.string().min(1).optional(),
    present: z.boolean().optional(),
    invert: z.boolean().optional(),
  })
  .strict()
  .refine((m) => [m.exact, m.prefix, m.regex, m.present].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of exact, prefix, regex or present",
  });

const Method = z.enum(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]);

export const RouteMatchSchema = z
  .object({
    path: z.string().startsWith("/", "must start with '/'").optional(),
    pathPrefix: z.string().startsWith("/", "must start with '/'").optional(),
    pathRegex: z.string().min(1).optional(),
    methods: z.array(Method).min(1).optional(),
    /** Host header (exact, or `*.suffix`); routes without a host apply to every host. */
    host: Hostname.optional(),
    headers: z.array(StringMatchSchema).optional(),
    query: z.array(StringMatchSchema).optional(),
  })
  .strict()
  .refine((m) => [m.path, m.pathPrefix, m.pathRegex].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of path, pathPrefix or pathRegex",
  });

const HeaderEditsSchema = z
  .object({
    /** Set (overwrite) these headers. */
    set: z.record(HeaderName, HeaderValue).optional(),
    remove: z.array(HeaderName).optional(),
  })
  .strict();

/** File names as imports name them: relative, with forward slashes. */
const ProtoFileName = z
  .string()
  .max(255)
  .regex(
    /^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_./-]*\.proto$/,
    "a relative path ending in .proto, as imports name it (acme/shop/v1/shop.proto)",
  );

/**
 * The protobuf descriptions of gRPC services, for transcoding: `.proto` sources (google/protobuf,
 * google/api and google/rpc imports are provided), or a FileDescriptorSet protoc made.
 */
export const ProtoDescriptorsSchema = z
  .object({
    name: Name,
    /** File name (the path imports use) → `.proto` text. */
    files: z.record(ProtoFileName, z.string()).optional(),
    /** A serialized FileDescriptorSet, base64 (`protoc --include_imports --descriptor_set_out`). */
    descriptorSet: z
      .string()
      .regex(/^[A-Za-z0-9+/]+={0,2}$/, "base64")
      .optional(),
  })
  .strict()
  .refine((d) => (d.files === undefined) !== (d.descriptorSet === undefined), {
    message: "give exactly one of files or descriptorSet",
  });

/** REST/JSON to gRPC: Envoy's transcoder calls the services' methods by their google.api.http rules. */
export const GrpcTranscodeSchema = z
  .object({
    /** The protoDescriptors resource that describes the services. */
    descriptors: Name,
    /** Full names of the services this route serves (`acme.shop.v1.Shop`). */
    services: z
      .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/, "a full service name"))
      .min(1),
    /** How answers are written as JSON. */
    printOptions: z
      .object({
        addWhitespace: z.boolean().optional(),
        alwaysPrintPrimitiveFields: z.boolean().optional(),
        alwaysPrintEnumsAsInts: z.boolean().optional(),
        preserveProtoFieldNames: z.boolean().optional(),
      })
      .strict()
      .optional(),
    /** Query parameters that name no field of the request are ignored; otherwise (default) a 400. */
    ignoreUnknownQueryParameters: z.boolean().default(false),
    /**
     * JSON body fields that name no field of the message are dropped (Envoy's transcoder alone);
     * otherwise (default) the request is refused with 400 before it reaches the upstream.
     */
    allowUnknownFields: z.boolean().default(false),
    /** Requests that map to no method get 404 (default), rather than reaching the gRPC upstream as they are. */
    rejectUnknownMethods: z.boolean().default(true),
    /**
     * Keep the route the REST path matched (default). Off: the call is matched again on its gRPC path
     * (`/acme.shop.v1.Shop/GetItem`), which then needs a route of its own.
     */
    matchIncomingRequestRoute: z.boolean().default(true),
  })
  .strict();

export const RouteSchema = z
  .object({
    name: Name,
    /** The gateway group whose Envoys serve this route. */
    gateway: Name,
    /** One listener of the gateway; every listener of the gateway when omitted. */
    listener: Name.optional(),
    match: RouteMatchSchema,
    /** Exactly one action: an upstream, weighted upstreams, a redirect or a direct response. */
    upstream: Name.optional(),
    upstreams: z
      .array(z.object({ name: Name, weight: z.number().int().min(1).max(10_000) }).strict())
      .min(1)
      .optional(),
    redirect: z
      .object({
        host: z.string().min(1).optional(),
        path: z.string().startsWith("/").optional(),
        prefix: z.string().startsWith("/").optional(),
        https: z.boolean().optional(),
        status: z
          .union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)])
          .default(302),
      })
      .strict()
      .optional(),
    directResponse: z
      .object({
        status: z.number().int().min(200).max(599),
        body: z.string().max(65_536).optional(),
        contentType: z.string().optional(),
      })
      .strict()
      .optional(),
    rewrite: z
      .object({
        prefix: z.string().optional(),
        regex: z
          .object({ pattern: z.string().min(1), substitution: z.string() })
          .strict()
          .optional(),
        host: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    /**
     * Where the route goes among its listener's routes when specificity does not decide: higher
     * first (default 0). Specificity comes first: exact paths, then longer prefixes, then regexes,
     * and routes with more conditions (methods, headers, query) before those with fewer.
     */
    priority: z
      .number()
      .int()
      .min(-1000)
      .max(1000)
      .optional()
      .meta({
        description:
          "Order among routes of the same specificity (same kind of path match, same prefix length, same " +
          "number of conditions): higher first, default 0; then the order of creation.",
        examples: [10],
      }),
    timeoutMs: Millis(3_600_000)
      .optional()
      .meta({
        description:
          "Deadline of the whole call to the upstream, retries included (the route's `timeout`; Envoy's " +
          "default is 15 s); past it the client gets 504.",
        examples: [3000],
      }),
    retries: RetrySchema.optional(),
    requestHeaders: HeaderEditsSchema.optional(),
    responseHeaders: HeaderEditsSchema.optional(),
    /**
     * The degraded answer when the upstream fails (a 5xx, or no healthy endpoint): a static
     * response, or another upstream that takes the traffic while this route's has no healthy
     * endpoint (an Envoy aggregate cluster; pair it with outlier detection or health checks).
     */
    fallback: z
      .object({
        upstream: Name.optional().meta({
          description:
            "Another upstream that takes the route's calls while this route's upstream has no healthy endpoint " +
            "(an aggregate cluster). Without a healthCheck on the route's upstream, failing endpoints are " +
            "detected passively for this route (a refused connection ejects an endpoint at once, 3 5xx answers " +
            "in a row too), and a call whose connection is refused is retried on the fallback, so the first " +
            "call after the upstream dies is already answered. Answers from the fallback carry " +
            "x-portico-degraded: fallback.",
          examples: ["catalog-cache"],
        }),
        status: z
          .number()
          .int()
          .min(200)
          .max(599)
          .optional()
          .meta({
            description:
              "A static answer in place of any 5xx of the route (Envoy's own, such as no healthy upstream, or the " +
              "upstream's), marked x-portico-degraded: fallback.",
            examples: [200],
          }),
        body: z
          .string()
          .max(65_536)
          .optional()
          .meta({ description: "The static answer's body.", examples: ['{"items":[]}'] }),
        contentType: z
          .string()
          .min(1)
          .optional()
          .meta({ description: "The static answer's content-type.", examples: ["application/json"] }),
      })
      .strict()
      .refine((f) => (f.upstream === undefined) !== (f.status === undefined), {
        message: "give either upstream, or status (with body and contentType)",
      })
      .optional(),
    /** Requests without one of these headers get 400 with a JSON body naming it. */
    requiredHeaders: z.array(HeaderName).min(1).optional(),
    /** Largest request body for this route, in bytes (overrides the listener's); larger gets 413. */
    maxBodyBytes: z.number().int().min(1).max(1_073_741_824).optional(),
    cors: z
      .object({
        /** Exact origins, or `*`; entries starting with `~` are RE2 regexes. */
        allowOrigins: z.array(z.string().min(1)).min(1),
        allowMethods: z.array(Method).optional(),
        allowHeaders: z.array(HeaderName).optional(),
        exposeHeaders: z.array(HeaderName).optional(),
        maxAgeSeconds: z.number().int().min(0).max(86_400).optional(),
        allowCredentials: z.boolean().optional(),
      })
      .strict()
      .optional(),
    authPolicy: Name.optional(),
    rateLimitPolicy: Name.optional(),
    grpcTranscode: GrpcTranscodeSchema.optional(),
  })
  .strict()
  .refine(
    (r) =>
      [r.upstream, r.upstreams, r.redirect, r.directResponse].filter((v) => v !== undefined).length === 1,
    { message: "give exactly one of upstream, upstreams, redirect or directResponse" },
  );

export const CertificateSchema = z
  .object({
    name: Name,
    certificatePem: z
      .string()
      .includes("-----BEGIN CERTIFICATE-----", { message: "not a PEM certificate" })
      .optional(),
    privateKeyPem: z.string().includes("PRIVATE KEY-----", { message: "not a PEM private key" }).optional(),
    /**
     * TLS session ticket keys (base64, 80 bytes each) for listeners presenting this certificate,
     * delivered by SDS: the first encrypts new tickets, all decrypt. Every Envoy of a group shares
     * them, so a session resumes on any of them; rotate by putting a new key first.
     */
    sessionTicketKeys: z
      .array(
        z
          .string()
          .regex(/^[A-Za-z0-9+/]+={0,2}$/, "base64")
          .refine((k) => Buffer.from(k, "base64").length === 80, "a session ticket key is 80 bytes"),
      )
      .min(1)
      .max(8)
      .optional(),
    /** CA bundle, for verifying upstreams or clients. */
    caPem: z
      .string()
      .includes("-----BEGIN CERTIFICATE-----", { message: "not a PEM certificate" })
      .optional(),
  })
  .strict();

export const ConfigSchema = z
  .object({
    gateways: z.array(GatewaySchema).default([]),
    upstreams: z.array(UpstreamSchema).default([]),
    routes: z.array(RouteSchema).default([]),
    compositeRoutes: z.array(CompositeRouteSchema).default([]),
    jwtProviders: z.array(JwtProviderSchema).default([]),
    oauthProviders: z.array(OauthProviderSchema).default([]),
    consumers: z.array(ConsumerSchema).default([]),
    apiKeys: z.array(ApiKeySchema).default([]),
    authPolicies: z.array(AuthPolicySchema).default([]),
    rateLimitPolicies: z.array(RateLimitPolicySchema).default([]),
    certificates: z.array(CertificateSchema).default([]),
    protoDescriptors: z.array(ProtoDescriptorsSchema).default([]),
  })
  .strict();

export type Listener = z.infer<typeof ListenerSchema>;
export type Gateway = z.infer<typeof GatewaySchema>;
export type GatewayAggregator = z.infer<typeof GatewayAggregatorSchema>;
export type Endpoint = z.infer<typeof EndpointSchema>;
export type Upstream = z.infer<typeof UpstreamSchema>;
export type RouteMatch = z.infer<typeof RouteMatchSchema>;
export type Route = z.infer<typeof RouteSchema>;
export type CompositeRoute = z.infer<typeof CompositeRouteSchema>;
export type JwtProvider = z.infer<typeof JwtProviderSchema>;
export type OauthProvider = z.infer<typeof OauthProviderSchema>;
export type Consumer = z.infer<typeof ConsumerSchema>;
export type ApiKey = z.infer<typeof ApiKeySchema>;
export type AuthPolicy = z.infer<typeof AuthPolicySchema>;
export type RateLimit = z.infer<typeof RateLimitSchema>;
export type RateLimitPolicy = z.infer<typeof RateLimitPolicySchema>;
export type Certificate = z.infer<typeof CertificateSchema>;
export type ProtoDescriptors = z.infer<typeof ProtoDescriptorsSchema>;
export type Config = z.infer<typeof ConfigSchema>;
/** A config as written by a person (defaults not yet filled in). */
export type ConfigInput = z.input<typeof ConfigSchema>;

/** The resource kinds of the admin API: URL segment → the config array and schema. */
export const KINDS = {
  gateways: GatewaySchema,
  upstreams: UpstreamSchema,
  routes: RouteSchema,
  compositeRoutes: CompositeRouteSchema,
  jwtProviders: JwtProviderSchema,
  oauthProviders: OauthProviderSchema,
  consumers: ConsumerSchema,
  apiKeys: ApiKeySchema,
  authPolicies: AuthPolicySchema,
  rateLimitPolicies: RateLimitPolicySchema,
  certificates: CertificateSchema,
  protoDescriptors: ProtoDescriptorsSchema,
} as const;
export type Kind = keyof typeof KINDS;
export const KIND_NAMES = Object.keys(KINDS) as Kind[];
