import type * as grpc from "@grpc/grpc-js";
import { POLICY_GROUP } from "@portico/contract";
import { silentLogger, type Logger } from "./log.js";
import { XdsClient, type ClientResource, type ClientUpdate } from "./xds-client.js";

export interface XdsConfigSourceOptions<T> {
  /** The control plane's xDS address, host:port. */
  target: string;
  nodeId: string;
  protocol?: "sotw" | "delta";
  /** TLS to the control plane (see xds-tls.ts); default plaintext. */
  credentials?: grpc.ChannelCredentials;
  log?: Logger;
  /** Each accepted config, with its xDS version. */
  onConfig: (config: T, version: string) => void;
  /** Each refused one, with the reason sent back in the NACK. */
  onReject?: (reason: string, version: string) => void;
}

export interface ConfigType<T> {
  typeUrl: string;
  /** `node.user_agent_name`, e.g. `portico-ratelimit`. */
  userAgent: string;
  /** What the config is, in log lines ("rate-limit config"). */
  what: string;
  /** The whole state of the type → a config; throwing refuses the response (NACK with the message). */
  build: (resources: ClientResource[]) => T;
  /** Log fields describing an accepted config. */
  describe: (config: T) => Record<string, unknown>;
}

/**
 * A policy service's config from one xDS resource type, wildcard-subscribed: each response is
 * built into a config before it is ACKed (a config that cannot be built is NACKed and the running
 * one kept), and handed over once the client has applied it.
 */
export class XdsConfigSource<T> {
  private readonly client: XdsClient;
  private pending?: { nonce: string; config: T };

  constructor(type: ConfigType<T>, opts: XdsConfigSourceOptions<T>) {
    const log = opts.log ?? silentLogger();
    const protocol = opts.protocol ?? "sotw";
    this.client = new XdsClient({
      target: opts.target,
      node: { id: opts.nodeId, cluster: POLICY_GROUP, user_agent_name: type.userAgent },
      protocol,
      reconnect: true,
      credentials: opts.credentials,
      validate: (u) => this.validate(u, type, protocol),
    });
    this.client.on("update", (u) => {
      const p = this.pending;
      if (u.typeUrl !== type.typeUrl || p?.nonce !== u.nonce) return;
      this.pending = undefined;
      log.info({ version: u.version, ...type.describe(p.config) }, `${type.what} received`);
      opts.onConfig(p.config, u.version);
    });
    this.client.on("nack", (u, reason) => {
      log.error({ version: u.version, reason }, `${type.what} refused; keeping the running config`);
      opts.onReject?.(reason, u.version);
    });
    // The stream reconnects by itself; the running config stays meanwhile.
    this.client.on("error", (err) => log.warn({ err: err.message, target: opts.target }, "xDS stream error"));
    this.client.subscribe(type.typeUrl);
  }

  private validate(u: ClientUpdate, type: ConfigType<T>, protocol: "sotw" | "delta"): void {
    if (u.typeUrl !== type.typeUrl) return;
    let resources = u.resources;
    if (protocol === "delta") {
      const next = this.client.resources(type.typeUrl);
      for (const r of u.resources) next.set(r.name, r);
      for (const n of u.removed) next.delete(n);
      resources = [...next.values()];
    }
    this.pending = { nonce: u.nonce, config: type.build(resources) };
  }

  close(): void {
    this.client.close();
  }
}
