import { z } from "zod";

/** Names become parts of Envoy resource names and stat prefixes, so they are kept plain. */
export const Name = z
  .string()
  .regex(
    /^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$/,
    "use 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
  );

const Port = z.number().int("must be a whole number").min(1, "must be 1-65535").max(65535, "must be 1-65535");

export const ListenerSchema = z
  .object({
    name: Name,
    port: Port,
    /** Address to bind; 0.0.0.0 for every interface. */
    address: z.string().min(1).default("0.0.0.0"),
  })
  .strict();

export const GatewaySchema = z
  .object({
    /** The gateway group: Envoys whose `node.cluster` is this name receive this gateway's config. */
    name: Name,
    listeners: z.array(ListenerSchema).min(1, "a gateway needs at least one listener"),
  })
  .strict();

export const EndpointSchema = z
  .object({
    host: z.string().min(1, "must not be empty"),
    port: Port,
    weight: z.number().int().min(1).max(128).optional(),
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
  })
  .strict();

export const RouteMatchSchema = z
  .object({
    path: z.string().startsWith("/", "must start with '/'").optional(),
    pathPrefix: z.string().startsWith("/", "must start with '/'").optional(),
    pathRegex: z.string().min(1).optional(),
  })
  .strict()
  .refine((m) => [m.path, m.pathPrefix, m.pathRegex].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of path, pathPrefix or pathRegex",
  });

export const RouteSchema = z
  .object({
    name: Name,
    /** The gateway group whose Envoys serve this route. */
    gateway: Name,
    /** One listener of the gateway; every listener of the gateway when omitted. */
    listener: Name.optional(),
    match: RouteMatchSchema,
    upstream: Name,
    prefixRewrite: z.string().startsWith("/", "must start with '/'").optional(),
    timeoutMs: z.number().int().min(0).max(3_600_000).optional(),
  })
  .strict();

export const ConfigSchema = z
  .object({
    gateways: z.array(GatewaySchema).default([]),
    upstreams: z.array(UpstreamSchema).default([]),
    routes: z.array(RouteSchema).default([]),
  })
  .strict();

export type Listener = z.infer<typeof ListenerSchema>;
export type Gateway = z.infer<typeof GatewaySchema>;
export type Endpoint = z.infer<typeof EndpointSchema>;
export type Upstream = z.infer<typeof UpstreamSchema>;
export type RouteMatch = z.infer<typeof RouteMatchSchema>;
export type Route = z.infer<typeof RouteSchema>;
export type Config = z.infer<typeof ConfigSchema>;
/** A config as written by a person (defaults not yet filled in). */
export type ConfigInput = z.input<typeof ConfigSchema>;
