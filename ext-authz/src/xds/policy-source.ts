import { EventEmitter } from "node:events";
import os from "node:os";
import type * as grpc from "@grpc/grpc-js";
import { XdsClient, type ClientUpdate, type Logger } from "@portico/common";
import { POLICY_GROUP, AUTH_TYPE_URLS } from "@portico/contract";
import { compilePolicy, type CompiledPolicy } from "../policy/compile.js";
import {
  assembleDocument,
  decodeResource,
  partOf,
  resourceField,
  type PolicyItem,
  type PolicyPart,
  type PolicyParts,
} from "./resources.js";

export interface XdsPolicySourceOptions {
  /** The control plane's xDS address, host:port. */
  target: string;
  /** Unique per process: the control plane keeps one status record (and NACK) per node id. */
  nodeId?: string;
  /** Delta (default) sends only the resources that changed; SotW resends a whole type. */
  protocol?: "sotw" | "delta";
  /** Where policies go; `setPolicy` may throw to refuse one (e.g. a secret's variable is unset). */
  authorizer: { setPolicy(policy: CompiledPolicy): void; warm(): Promise<void> };
  logger?: Logger;
  credentials?: grpc.ChannelCredentials;
}

/** What one installed response changed: for logs, and to see what delta xDS actually sent. */
export interface PolicyChange {
  typeUrl: string;
  version: string;
  /** Names of the resources the response carried (for SotW, every resource of the type). */
  resources: string[];
  removed: string[];
}

export function defaultNodeId(): string {
  return `ext-authz-${os.hostname()}-${process.pid}`;
}

/**
 * Receives the auth policy from the control plane over xDS, as a node of the `portico:policy`
 * group subscribed to every auth resource type. Each response is decoded, assembled with what is
 * held of the other types and compiled by the same code as a policy file; a response that does
 * not compile, or that the authorizer cannot install, is NACKed with the reason and the previous
 * policy stays. Nothing is installed until every type has been received once, so the service
 * never runs on half a policy.
 */
export class XdsPolicySource extends EventEmitter<{
  /** The first complete policy is installed. */
  ready: [CompiledPolicy];
  /** A policy was installed (the first one too). */
  installed: [CompiledPolicy, PolicyChange];
  rejected: [typeUrl: string, reason: string];
}> {
  readonly nodeId: string;
  private readonly client: XdsClient;
  private readonly parts: Record<PolicyPart, ReadonlyMap<string, PolicyItem>> = {
    jwtProviders: new Map(),
    oauthProviders: new Map(),
    consumers: new Map(),
    apiKeys: new Map(),
    authPolicies: new Map(),
  };
  private readonly received = new Set<string>();
  private current?: CompiledPolicy;

  constructor(private readonly opts: XdsPolicySourceOptions) {
    super();
    this.nodeId = opts.nodeId ?? defaultNodeId();
    const protocol = opts.protocol ?? "delta";
    this.client = new XdsClient({
      target: opts.target,
      node: { id: this.nodeId, cluster: POLICY_GROUP, user_agent_name: "portico-ext-authz" },
      protocol,
      reconnect: true,
      credentials: opts.credentials,
      validate: (update) => this.onUpdate(update),
    });
    this.client.on("error", (err) =>
      opts.logger?.warn({ err: err.message, target: opts.target }, "xDS stream failed; reconnecting"),
    );
    this.client.on("nack", (update, reason) => {
      opts.logger?.error(
        { typeUrl: update.typeUrl, err: reason },
        "policy refused (NACK); the previous stays",
      );
      this.emit("rejected", update.typeUrl, reason);
    });
    this.client.on("connected", () => opts.logger?.debug({ target: opts.target }, "xDS stream opened"));
    // Subscribed in dependency order: the control plane answers them in this order.
    for (const typeUrl of AUTH_TYPE_URLS) this.client.subscribe(typeUrl);
    opts.logger?.info(
      { target: opts.target, node: this.nodeId, protocol },
      "waiting for the policy over xDS",
    );
  }

  /** Whether a complete policy has been installed. */
  get ready(): boolean {
    return this.current !== undefined;
  }

  get policy(): CompiledPolicy | undefined {
    return this.current;
  }

  /** Runs inside the client before it applies a response: throwing NACKs it. */
  private onUpdate(update: ClientUpdate): void {
    const part = partOf(update.typeUrl);
    if (!part) return;
    // SotW carries the whole type; delta only what changed.
    const next = this.isSotw() ? new Map<string, PolicyItem>() : new Map(this.parts[part]);
    for (const name of update.removed) next.delete(name);
    for (const r of update.resources) next.set(r.name, decodeResource(update.typeUrl, r.name, r.any));
    const parts: PolicyParts = { ...this.parts, [part]: next };
    const doc = assembleDocument(parts);
    const compiled = compilePolicy(doc);
    if (!compiled.ok) {
      const details = compiled.error.details.map((d) => `${resourceField(doc, d.field)}: ${d.reason}`);
      throw new Error(`${compiled.error.message}: ${details.join("; ")}`);
    }
    const complete = AUTH_TYPE_URLS.every((t) => t === update.typeUrl || this.received.has(t));
    // Throws (a NACK, the old policy kept) when a provider cannot be built.
    if (complete) this.opts.authorizer.setPolicy(compiled.value);
    this.parts[part] = next;
    this.received.add(update.typeUrl);
    if (!complete) return;
    const first = !this.current;
    this.current = compiled.value;
    void this.opts.authorizer.warm();
    const change: PolicyChange = {
      typeUrl: update.typeUrl,
      version: update.version,
      resources: update.resources.map((r) => r.name),
      removed: update.removed,
    };
    this.opts.logger?.info(
      {
        revision: compiled.value.revision,
        typeUrl: change.typeUrl,
        version: change.version,
        resources: change.resources.length,
        removed: change.removed.length,
      },
      first ? "policy received" : "policy updated",
    );
    this.emit("installed", compiled.value, change);
    if (first) this.emit("ready", compiled.value);
  }

  private isSotw(): boolean {
    return (this.opts.protocol ?? "delta") === "sotw";
  }

  close(): void {
    this.client.close();
  }
}
