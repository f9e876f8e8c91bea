import { createHash } from "node:crypto";
import { encodeSotwBody, type DiscoveryRequest } from "@portico/common";
import type { EncodedResource, Snapshot } from "./snapshot.js";
import {
  changeBetween,
  sameNames,
  subscription,
  viewOf,
  WILDCARD,
  type Subscription,
  type View,
} from "./views.js";
import { sharedResponse, XdsStream, type Trigger } from "./stream.js";
import { isFullStateType, TypeUrl } from "./types.js";

interface SotwTypeState {
  /** The names asked for (interned: streams asking for the same names share one). */
  sub: Subscription;
  /** The view of the latest response, and the removed resources it still carried (held back). */
  sent?: View;
  heldBack: readonly EncodedResource[];
  /** The version of the latest response, and the nonce it went with. */
  sentVersion?: string;
  lastNonce?: string;
  ackedVersion?: string;
  /** Answer the next request even if nothing changed (a cluster or listener is warming). */
  forceNext: boolean;
}

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
    return st.ackedVersion === viewOf(this.snapshot, typeUrl, st.sub).version;
  }

  protected holdsEndpoints(names: readonly string[]): boolean {
    const st = this.types.get(TypeUrl.Endpoint);
    if (!st?.sent || st.ackedVersion !== st.sentVersion) return false;
    return names.every((n) => !!st.sent!.entries.get(n));
  }

  protected onRequest(req: DiscoveryRequest): void {
    const typeUrl = this.accept(req);
    if (!typeUrl) return;
    let st = this.types.get(typeUrl);
    const fresh = !st;
    if (!st) {
      st = { sub: WILDCARD, heldBack: [], forceNext: true };
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

    // Envoy repeats every name on every ACK; only a real change is worth sorting and interning.
    let namesChanged = false;
    const wildcard = req.resource_names.length === 0 && isFullStateType(typeUrl);
    const same = wildcard ? st.sub === WILDCARD : !st.sub.wildcard && sameNames(st.sub, req.resource_names);
    if (!same) {
      const next = wildcard ? WILDCARD : subscription(false, req.resource_names);
      namesChanged = next !== st.sub;
      st.sub = next;
    }

    if (!answersLatest || namesChanged || st.forceNext) this.respond(typeUrl, "request", namesChanged);
  }

  protected answer(typeUrl: string, trigger: Trigger, namesChanged = false): boolean {
    const st = this.types.get(typeUrl);
    const snapshot = this.snapshot;
    if (!st || !snapshot) return false;
    const view = viewOf(snapshot, typeUrl, st.sub);
    const force = st.forceNext && trigger === "request";
    if (view.version === st.sentVersion && !namesChanged && !force) return false;

    let version = view.version;
    let heldBack: readonly EncodedResource[] = [];
    if (isFullStateType(typeUrl)) {
      // Make-before-break: on a push, resources the node holds but the snapshot dropped stay in
      // this response and go in a second one, after everything else of the push was answered.
      const removed = this.removedFrom(snapshot, st, view);
      if (trigger === "push" && removed.length > 0) {
        heldBack = removed;
        this.removalPending.add(typeUrl);
        version = `${view.version}+${hashNames(removed.map((r) => r.name))}`;
      }
      if (typeUrl === TypeUrl.Cluster) {
        const held = (name: string) =>
          !!st.sent?.entries.get(name) || st.heldBack.some((r) => r.name === name);
        this.clustersAdded(changeBetween(snapshot, st.sent, view).send.filter((r) => !held(r.name)));
      }
    }

    const response = snapshot.memoType(typeUrl, `sotw\0${st.sub.key}\0${version}`, () =>
      sharedResponse(
        encodeSotwBody(
          version,
          typeUrl,
          [...view.resources, ...heldBack].map((r) => r.any),
        ),
      ),
    );
    st.sent = view;
    st.heldBack = heldBack;
    st.sentVersion = version;
    st.forceNext = false;
    st.lastNonce = this.send(typeUrl, response, version);
    // A changed cluster warms until its endpoints arrive, a changed listener until its routes do,
    // even when those did not change: the next EDS/RDS request must get an answer.
    if (typeUrl === TypeUrl.Cluster) this.forceNext(TypeUrl.Endpoint);
    if (typeUrl === TypeUrl.Listener) this.forceNext(TypeUrl.Route);
    return heldBack.length > 0;
  }

  /** What the node holds (last response, and what it still carried) that `view` no longer has. */
  private removedFrom(snapshot: Snapshot, st: SotwTypeState, view: View): EncodedResource[] {
    const removed: EncodedResource[] = [];
    for (const name of changeBetween(snapshot, st.sent, view).remove) {
      const r = st.sent?.entries.get(name);
      if (r) removed.push(r);
    }
    for (const r of st.heldBack) {
      if (!view.entries.has(r.name) && !removed.some((x) => x.name === r.name)) removed.push(r);
    }
    return removed;
  }

  private forceNext(typeUrl: string): void {
    const st = this.types.get(typeUrl);
    if (st) st.forceNext = true;
  }
}

function hashNames(names: string[]): string {
  return createHash("sha256").update(names.sort().join("\n")).digest("hex").slice(0, 8);
}
