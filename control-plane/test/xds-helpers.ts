import * as grpc from "@grpc/grpc-js";
import {
  decodeDeltaDiscoveryResponse,
  decodeDiscoveryResponse,
  encodeDeltaDiscoveryRequest,
  encodeDiscoveryRequest,
  silentLogger,
  XdsClient,
  type ClientUpdate,
  type DeltaDiscoveryRequest,
  type DiscoveryRequest,
} from "@portico/common";
import { buildSnapshot, type ResourceInput } from "../src/xds/snapshot.js";
import { XdsServer } from "../src/xds/server.js";
import { TypeUrl } from "../src/xds/types.js";

export async function startServer(): Promise<{ server: XdsServer; target: string }> {
  const server = new XdsServer({ log: silentLogger() });
  const port = await server.listen("127.0.0.1", 0);
  return { server, target: `127.0.0.1:${port}` };
}

/** A client plus every update and NACK it saw, with waits that fail with a clear message. */
export class Recorder {
  readonly updates: ClientUpdate[] = [];
  readonly nacks: { update: ClientUpdate; error: string }[] = [];
  readonly client: XdsClient;

  constructor(
    target: string,
    opts: {
      id?: string;
      group?: string;
      protocol?: "sotw" | "delta";
      refuse?: (u: ClientUpdate) => string | undefined;
    } = {},
  ) {
    this.client = new XdsClient({
      target,
      node: { id: opts.id ?? "node-1", cluster: opts.group ?? "edge" },
      protocol: opts.protocol ?? "sotw",
      validate: (u) => {
        const why = opts.refuse?.(u);
        if (why) throw new Error(why);
      },
    });
    this.client.on("update", (u) => this.updates.push(u));
    this.client.on("nack", (update, error) => this.nacks.push({ update, error }));
  }

  /**
   * Subscribes the way Envoy does on ADS: CDS and LDS by wildcard; then the endpoints of every
   * cluster it receives and the route table of every listener it receives (here both carry the
   * same name), asked for once the response that named them was accepted.
   */
  followLikeEnvoy(): void {
    const follow = (from: string, to: string) => {
      const asked = new Set<string>();
      this.client.on("update", (u) => {
        if (u.typeUrl !== from) return;
        const fresh = [...this.client.resources(from).keys()].filter((n) => !asked.has(n));
        if (fresh.length === 0) return;
        for (const n of fresh) asked.add(n);
        // After the ACK this update triggers, as Envoy asks only once it applied the response.
        setImmediate(() => this.client.subscribe(to, fresh));
      });
    };
    follow(TypeUrl.Cluster, TypeUrl.Endpoint);
    follow(TypeUrl.Listener, TypeUrl.Route);
    this.client.subscribe(TypeUrl.Cluster);
    this.client.subscribe(TypeUrl.Listener);
  }

  ofType(typeUrl: string): ClientUpdate[] {
    return this.updates.filter((u) => u.typeUrl === typeUrl);
  }

  async waitCount(typeUrl: string, n: number, timeoutMs = 3_000): Promise<ClientUpdate[]> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const seen = [
        ...this.ofType(typeUrl),
        ...this.nacks.filter((x) => x.update.typeUrl === typeUrl).map((x) => x.update),
      ];
      if (seen.length >= n) return this.ofType(typeUrl);
      await sleep(5);
    }
    throw new Error(`expected ${n} responses of ${typeUrl}, saw ${this.ofType(typeUrl).length}`);
  }

  close(): void {
    this.client.close();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A tiny but real set of Envoy resources for one group. */
export function resources(opts: {
  clusters?: string[];
  listeners?: string[];
  endpointPort?: number;
  routeTag?: string;
  /** With an ECDS filter config (`filter`), whose content this tag sets. */
  filterTag?: string;
}): ResourceInput[] {
  const out: ResourceInput[] = [];
  if (opts.filterTag !== undefined) {
    out.push({
      typeUrl: TypeUrl.ExtensionConfig,
      name: "filter",
      message: {
        name: "filter",
        typed_config: {
          "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
          stat_prefix: opts.filterTag,
        },
      },
    });
  }
  for (const c of opts.clusters ?? ["a"]) {
    out.push({
      typeUrl: TypeUrl.Cluster,
      name: c,
      message: {
        name: c,
        type: "EDS",
        eds_cluster_config: { eds_config: { ads: {}, resource_api_version: "V3" } },
      },
    });
    out.push({
      typeUrl: TypeUrl.Endpoint,
      name: c,
      message: {
        cluster_name: c,
        endpoints: [
          {
            lb_endpoints: [
              {
                endpoint: {
                  address: {
                    socket_address: { address: "127.0.0.1", port_value: opts.endpointPort ?? 8080 },
                  },
                },
              },
            ],
          },
        ],
      },
    });
  }
  for (const l of opts.listeners ?? ["l1"]) {
    out.push({
      typeUrl: TypeUrl.Listener,
      name: l,
      message: { name: l, address: { socket_address: { address: "127.0.0.1", port_value: 10000 } } },
    });
    out.push({
      typeUrl: TypeUrl.Route,
      name: l,
      message: { name: l, virtual_hosts: [{ name: opts.routeTag ?? "vh", domains: ["*"] }] },
    });
  }
  return out;
}

export function snapshot(group: string, opts: Parameters<typeof resources>[0]) {
  return buildSnapshot(group, resources(opts));
}

/** How a stream opened by `rawStream` ended, and every message that arrived on it before. */
export interface RawOutcome {
  code: grpc.status;
  details: string;
  received: Buffer[];
}

/**
 * A bare xDS stream made with grpc-js, as a hostile client would make one: sends `requests` as
 * they are, NACKs whatever arrives, and keeps the raw bytes. Resolves when the server ends the
 * stream; rejects if it is still open after `timeoutMs`.
 */
export function rawStream(
  target: string,
  credentials: grpc.ChannelCredentials,
  o: {
    protocol?: "sotw" | "delta";
    /** Default ADS; e.g. `/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets`. */
    path?: string;
    requests: Array<Partial<DiscoveryRequest> | Partial<DeltaDiscoveryRequest>>;
    timeoutMs?: number;
  },
): Promise<RawOutcome> {
  const delta = o.protocol === "delta";
  const path =
    o.path ??
    `/envoy.service.discovery.v3.AggregatedDiscoveryService/${delta ? "DeltaAggregatedResources" : "StreamAggregatedResources"}`;
  const client = new grpc.Client(target, credentials);
  const call = client.makeBidiStreamRequest<any, Buffer>(
    path,
    delta ? encodeDeltaDiscoveryRequest : encodeDiscoveryRequest,
    (b: Buffer) => b,
  );
  const received: Buffer[] = [];
  return new Promise<RawOutcome>((resolve, reject) => {
    const timer = setTimeout(() => {
      call.cancel();
      client.close();
      reject(
        new Error(
          `the stream was still open after ${o.timeoutMs ?? 5_000} ms; received ${received.length} messages`,
        ),
      );
    }, o.timeoutMs ?? 5_000);
    call.on("data", (b: Buffer) => {
      received.push(b);
      const r = delta ? decodeDeltaDiscoveryResponse(b) : decodeDiscoveryResponse(b);
      call.write({
        type_url: r.type_url,
        response_nonce: r.nonce,
        error_detail: { code: 3, message: "refused by a rogue" },
      });
    });
    call.on("error", () => {});
    call.on("status", (st: grpc.StatusObject) => {
      clearTimeout(timer);
      client.close();
      resolve({ code: st.code, details: st.details, received });
    });
    for (const r of o.requests) call.write(r);
  });
}
