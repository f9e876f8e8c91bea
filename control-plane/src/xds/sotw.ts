import { createHash } from "node:crypto";
import { encodeSotwBody, withNonce, type DiscoveryRequest } from "./codec.js";
import type { EncodedResource, Snapshot } from "./snapshot.js";
import { XdsStream, type Trigger } from "./stream.js";
import { isFullStateType, TypeUrl } from "./types.js";

interface SotwTypeState {
  /** Requested names; null is "everything" (wildcard on LDS/CDS). */
  names: Set<string> | null;
  namesKey: string;
  /** The version of the latest response, and the nonce it went with. */
  sentVersion?: string;
  lastNonce?: string;
  ackedVersion?: string;
  /** For LDS/CDS: what the node holds, so removed resources can be kept until the second phase. */
  held: Map<string, EncodedResource>;
  /** Answer the next request even if nothing changed (a cluster or listener is warming). */
  forceNext: boolean;
}

const NONCE_FIELD = 5;

/**
 * State-of-the-world xDS on one stream (ADS or a per-type service). Only requests carrying the
 * latest nonce count; a NACK is detected by its `error_detail` and the refused version is never
 * sent again, since what is compared is what was *sent*, not what the node says it has
 * (the NACK re-send loop of go-control-plane #962).
 */
export class SotwStream extends XdsStream<DiscoveryRequest> {
  private readonly types = new Map<string, SotwTypeState>();

  protected isRequested(typeUrl: string): boolean {
    return this.types.has(typeUrl);
  }

  protected isInSync(typeUrl: string): boolean {
    const st = this.types.get(typeUrl);
    if (!st || !this.snapshot) return false;
    return st.ackedVersion === this.view(this.snapshot, typeUrl, st).version;
  }

  protected onRequest(req: DiscoveryRequest): void {
    const typeUrl = this.accept(req);
    if (!typeUrl) return;
    let st = this.types.get(typeUrl);
    const fresh = !st;
    if (!st) {
      st = { names: null, namesKey: "*", held: new Map(), forceNext: true };
      this.types.set(typeUrl, st);
    }

    const nonce = req.response_nonce;
    if (nonce && st.lastNonce !== undefined && nonce !== st.lastNonce) {
      // An answer to a response that has since been superseded: the node will answer the newer one.
      this.deps.metrics.staleNonces.inc({ protocol: "sotw" });
      return;
    }
    const answersLatest = !fresh && !!nonce && nonce === st.lastNonce;
    if (answersLatest) {
      this.inFlight.delete(typeUrl);
      if (req.error_detail && (req.error_detail.code || req.error_detail.message)) {
        this.recordNack(typeUrl, st.sentVersion ?? "", nonce, req.error_detail);
      } else {
        st.ackedVersion = req.version_info;
        this.recordAck(typeUrl, req.version_info);
      }
    }

    const names =
      req.resource_names.length === 0 && isFullStateType(typeUrl) ? null : new Set(req.resource_names);
    const namesKey = names ? [...names].sort().join("\n") : "*";
    const namesChanged = namesKey !== st.namesKey;
    st.names = names;
    st.namesKey = namesKey;

    if (!answersLatest || namesChanged || st.forceNext) this.respond(typeUrl, "request", namesChanged);
  }

  protected respond(typeUrl: string, trigger: Trigger, namesChanged = false): boolean {
    const st = this.types.get(typeUrl);
    const snapshot = this.snapshot;
    if (!st || !snapshot) return false;
    const view = this.view(snapshot, typeUrl, st);
    const force = st.forceNext && trigger === "request";
    if (view.version === st.sentVersion && !namesChanged && !force) return false;

    let version = view.version;
    let resources = view.resources;
    let heldBack = false;
    if (isFullStateType(typeUrl)) {
      // Make-before-break: on a push, resources the node holds but the snapshot dropped stay in
      // this response and go in a second one, after everything else of the push was answered.
      const removed = [...st.held.values()].filter((r) => !view.names.has(r.name));
      if (trigger === "push" && removed.length > 0) {
        heldBack = true;
        this.removalPending.add(typeUrl);
        resources = [...resources, ...removed];
        version = `${view.version}+${hashNames(removed.map((r) => r.name))}`;
      }
      st.held = new Map(resources.map((r) => [r.name, r]));
    }

    const key = `sotw\0${typeUrl}\0${st.namesKey}\0${version}`;
    const body = snapshot.memo(key, () =>
      encodeSotwBody(
        version,
        typeUrl,
        resources.map((r) => r.any),
      ),
    );
    const nonce = this.nextNonce();
    st.sentVersion = version;
    st.lastNonce = nonce;
    st.forceNext = false;
    this.write(typeUrl, withNonce(body, NONCE_FIELD, nonce), nonce, version);
    // A changed cluster warms until its endpoints arrive, a changed listener until its routes do,
    // even when those did not change: the next EDS/RDS request must get an answer.
    if (typeUrl === TypeUrl.Cluster) this.forceNext(TypeUrl.Endpoint);
    if (typeUrl === TypeUrl.Listener) this.forceNext(TypeUrl.Route);
    return heldBack;
  }

  private forceNext(typeUrl: string): void {
    const st = this.types.get(typeUrl);
    if (st) st.forceNext = true;
  }

  /** The resources of a type this stream asked for, and a version that covers exactly those. */
  private view(
    snapshot: Snapshot,
    typeUrl: string,
    st: SotwTypeState,
  ): { version: string; resources: EncodedResource[]; names: Set<string> } {
    const all = snapshot.get(typeUrl);
    if (st.names === null) {
      return {
        version: all.version,
        resources: [...all.resources.values()],
        names: new Set(all.resources.keys()),
      };
    }
    const resources: EncodedResource[] = [];
    for (const name of st.names) {
      const r = all.resources.get(name);
      if (r) resources.push(r);
    }
    resources.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const h = createHash("sha256");
    for (const r of resources) h.update(r.name).update("\0").update(r.version).update("\n");
    return { version: h.digest("hex").slice(0, 20), resources, names: new Set(resources.map((r) => r.name)) };
  }
}

function hashNames(names: string[]): string {
  return createHash("sha256").update(names.sort().join("\n")).digest("hex").slice(0, 8);
}
