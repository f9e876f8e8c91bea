/**
 * Composite routes from Portico's control plane over xDS: an ADS client in the `portico:policy`
 * group subscribes to every `portico.aggregator.v1.CompositeRoute`. Each response is compiled
 * whole; one that does not compile is refused (a NACK naming every problem) and the running
 * config stays.
 */
import type * as grpc from "@grpc/grpc-js";
import type protobuf from "protobufjs";
import { silentLogger, type Logger } from "../../../common/src/log.js";
import { XdsClient, type ClientResource, type ClientUpdate } from "../../../common/src/xds-client.js";
import { loadProtoRoot } from "../../../protos/src/loader.js";
import {
  COMPOSITE_ROUTE_TYPE,
  COMPOSITE_ROUTE_TYPE_URL,
  type CompositeRouteMessage,
} from "../../../protos/src/portico-aggregator.js";
import { compileRoutes, type AggregatorConfig } from "./compile.js";
import { formatProblems } from "./spec.js";

/** The control plane's group for policy services (not a valid gateway name, so never a gateway's). */
export const POLICY_GROUP = "portico:policy";

let routeType: protobuf.Type | undefined;

function decode(bytes: Uint8Array): CompositeRouteMessage {
  routeType ??= loadProtoRoot(["portico/aggregator/v1/aggregator.proto"]).lookupType(COMPOSITE_ROUTE_TYPE);
  return routeType.toObject(routeType.decode(bytes), {
    longs: Number,
    defaults: false,
  }) as CompositeRouteMessage;
}

/**
 * Where the aggregator reaches a gateway's parts listener. A listener bound to every interface is
 * reached on loopback (the aggregator beside its Envoy); `partsHost` overrides the host for
 * other layouts.
 */
export function partsUrl(m: CompositeRouteMessage, partsHost?: string): string {
  const bound = m.parts_address || "127.0.0.1";
  const host = partsHost ?? (bound === "0.0.0.0" || bound === "::" ? "127.0.0.1" : bound);
  return `http://${host.includes(":") ? `[${host}]` : host}:${m.parts_port}`;
}

/** A resource → the spec the YAML file would hold for it. */
export function specOf(m: CompositeRouteMessage, partsHost?: string): Record<string, unknown> {
  return {
    name: m.name,
    gateway: m.gateway ?? "",
    match: { path: m.path, methods: m.methods?.length ? m.methods : undefined },
    timeoutMs: m.timeout_ms,
    partsUrl: partsUrl(m, partsHost),
    parts: (m.parts ?? []).map((p) => ({
      key: p.key,
      upstream: p.upstream,
      path: p.path,
      method: p.method || undefined,
      timeoutMs: p.timeout_ms,
      required: p.required ?? false,
      ...(p.stale_fallback
        ? { staleFallback: { maxAgeSeconds: p.stale_fallback.max_age_seconds ?? 0 } }
        : {}),
    })),
  };
}

/** The resources of one xDS state → a config; throws with every problem, each as `xds:<name>.<field>`. */
export function configFromResources(
  resources: readonly ClientResource[],
  partsHost?: string,
): AggregatorConfig {
  const inputs = [...resources]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((r) => {
      const at = `xds:${r.name}`;
      if (r.any.type_url !== COMPOSITE_ROUTE_TYPE_URL)
        throw new Error(`${at}: unexpected resource type ${r.any.type_url}`);
      try {
        return { at, value: specOf(decode(r.any.value), partsHost) };
      } catch (err) {
        throw new Error(`${at}: cannot decode: ${(err as Error).message}`, { cause: err });
      }
    });
  const compiled = compileRoutes(inputs);
  if (!compiled.ok) throw new Error(formatProblems(compiled.problems));
  return compiled.value;
}

export interface XdsConfigSourceOptions {
  /** The control plane's xDS address, host:port. */
  target: string;
  nodeId: string;
  protocol?: "sotw" | "delta";
  /** TLS to the control plane (see common/src/xds-tls.ts); default plaintext. */
  credentials?: grpc.ChannelCredentials;
  partsHost?: string;
  log?: Logger;
  /** Each accepted config, with its xDS version. */
  onConfig: (config: AggregatorConfig, version: string) => void;
  /** Each refused one, with the reason sent back in the NACK. */
  onReject?: (reason: string, version: string) => void;
}

export class XdsConfigSource {
  private readonly client: XdsClient;
  private pending?: { nonce: string; config: AggregatorConfig };

  constructor(opts: XdsConfigSourceOptions) {
    const log = opts.log ?? silentLogger();
    const protocol = opts.protocol ?? "sotw";
    this.client = new XdsClient({
      target: opts.target,
      node: { id: opts.nodeId, cluster: POLICY_GROUP, user_agent_name: "portico-aggregator" },
      protocol,
      reconnect: true,
      credentials: opts.credentials,
      validate: (u) => this.validate(u, protocol, opts.partsHost),
    });
    this.client.on("update", (u) => {
      const p = this.pending;
      if (u.typeUrl !== COMPOSITE_ROUTE_TYPE_URL || p?.nonce !== u.nonce) return;
      this.pending = undefined;
      log.info({ version: u.version, routes: [...p.config.routes.keys()] }, "composite routes received");
      opts.onConfig(p.config, u.version);
    });
    this.client.on("nack", (u, reason) => {
      log.error({ version: u.version, reason }, "composite routes refused; keeping the running config");
      opts.onReject?.(reason, u.version);
    });
    // The stream reconnects by itself; the running config stays meanwhile.
    this.client.on("error", (err) => log.warn({ err: err.message, target: opts.target }, "xDS stream error"));
    this.client.subscribe(COMPOSITE_ROUTE_TYPE_URL);
  }

  /** Compiles the config a response would give; throwing refuses the response. */
  private validate(u: ClientUpdate, protocol: "sotw" | "delta", partsHost: string | undefined): void {
    if (u.typeUrl !== COMPOSITE_ROUTE_TYPE_URL) return;
    let resources = u.resources;
    if (protocol === "delta") {
      const next = this.client.resources(COMPOSITE_ROUTE_TYPE_URL);
      for (const r of u.resources) next.set(r.name, r);
      for (const n of u.removed) next.delete(n);
      resources = [...next.values()];
    }
    this.pending = { nonce: u.nonce, config: configFromResources(resources, partsHost) };
  }

  close(): void {
    this.client.close();
  }
}
