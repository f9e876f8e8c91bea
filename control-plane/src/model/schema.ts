import { z } from "zod";
// The policy kinds (providers, consumers, API keys, auth and rate-limit policies, composite routes)
// are the contract's schemas: ext-authz, the rate limiter and the aggregator read the same ones.
import {
  ApiKeySchema,
  AuthPolicySchema,
  CompositeRouteSchema,
  ConsumerSchema,
  JwtProviderSchema,
  Name,
  OauthProviderSchema,
  RateLimitPolicySchema,
  RateLimitSchema,
  RetrySchema,
  Millis,
} from "@portico/contract";

export {
  ApiKeySchema,
  AuthPolicySchema,
  CompositeRouteSchema,
  ConsumerSchema,
  JwtProviderSchema,
  Name,
  OauthProviderSchema,
  RateLimitPolicySchema,
  RateLimitSchema,
  RetrySchema,
};

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
    /** Largest request header block, in KiB; larger requests get 431. Envoy's default is 60. */
    maxRequestHeadersKb: z.number().int().min(1).max(8192).optional(),
    /** Largest request body on this listener's routes, in bytes; larger requests get 413. */
    maxBodyBytes: z.number().int().min(1).max(1_073_741_824).optional(),
    /**
     * Keep the `x-portico-*` identity headers a request arrives with. Every other listener removes
     * them on arrival; set this only on a listener that nothing but the gateway can reach (a
     * service's sidecar behind the edge), so the identity the edge authenticated reaches the service.
     */
    trustIdentityHeaders: z.boolean().default(false),
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
     * `ext_authz` (default): Portico's service checks every credential kind. `jwt_authn`: routes
     * whose policy accepts only JWTs from inline-JWKS or remote-JWKS providers are verified by
     * Envoy's own `jwt_authn` filter instead (no call out), for users who prefer it and to compare.
     */
    jwt: z.enum(["ext_authz", "jwt_authn"]).default("ext_authz"),
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
     * retries, circuit breakers, TLS and outlier detection. It trusts the identity headers it is
     * given, so it must be reachable by the aggregator only: keep it on loopback (the default).
     */
    partsListener: z.object({ address: z.string().min(1).default("127.0.0.1"), port: Port }).strict(),
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

export const HealthCheckSchema = z
  .object({
    path: z.string().startsWith("/", "must start with '/'").default("/healthz"),
    intervalMs: Millis(3_600_000).default(5_000),
    timeoutMs: Millis(60_000).default(1_000),
    unhealthyThreshold: z.number().int().min(1).max(100).default(3),
    healthyThreshold: z.number().int().min(1).max(100).default(2),
  })
  .strict();

export const CircuitBreakerSchema = z
  .object({
    maxConnections: z.number().int().min(1).optional(),
    maxPendingRequests: z.number().int().min(1).optional(),
    maxRequests: z.number().int().min(1).optional(),
    maxRetries: z.number().int().min(0).optional(),
  })
  .strict();

export const OutlierDetectionSchema = z
  .object({
    consecutive5xx: z.number().int().min(1).default(5),
    intervalMs: Millis(3_600_000).default(10_000),
    baseEjectionMs: Millis(3_600_000).default(30_000),
    maxEjectionPercent: z.number().int().min(0).max(100).default(50),
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
  })
  .strict();

export const UpstreamSchema = z
  .object({
    name: Name,
    endpoints: z.array(EndpointSchema).min(1, "an upstream needs at least one endpoint"),
    protocol: z.enum(["http1", "http2", "grpc"]).default("http1"),
    loadBalancing: z
      .enum(["round_robin", "least_request", "random", "ring_hash", "maglev"])
      .default("round_robin"),
    connectTimeoutMs: z.number().int().min(1).max(60_000).default(1_000),
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
    timeoutMs: Millis(3_600_000).optional(),
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
        upstream: Name.optional(),
        status: z.number().int().min(200).max(599).optional(),
        body: z.string().max(65_536).optional(),
        contentType: z.string().min(1).optional(),
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
