import { encodeDeltaResponse, type DeltaDiscoveryRequest } from "@portico/common";
import type { EncodedResource } from "./snapshot.js";
import { XdsStream, type Trigger } from "./stream.js";

interface DeltaTypeState {
  wildcard: boolean;
  subscribed: Set<string>;
  /** name → version the node holds (as far as this stream knows). */
  known: Map<string, string>;
  /** Explicitly subscribed names already answered with "does not exist". */
  reportedMissing: Set<string>;
  lastNonce?: string;
  lastVersion?: string;
  /** The latest response of this type was refused. */
  nacked: boolean;
}

/**
 * Incremental xDS on one stream. Unlike SotW, subscription changes are applied whatever the nonce
 * (a stale nonce only means the ACK bookkeeping is skipped), and a name asked for that does not
 * exist is answered in `removed_resources` so the node does not wait for it.
 */
export class DeltaStream extends XdsStream<DeltaDiscoveryRequest> {
  private readonly types = new Map<string, DeltaTypeState>();

  protected isRequested(typeUrl: string): boolean {
    return this.types.has(typeUrl);
  }

  protected isInSync(typeUrl: string): boolean {
    const st = this.types.get(typeUrl);
    if (!st || st.nacked) return false;
    const diff = this.diff(typeUrl, st);
    return diff.send.length === 0 && diff.remove.length === 0;
  }

  protected onRequest(req: DeltaDiscoveryRequest): void {
    const typeUrl = this.accept(req);
    if (!typeUrl) return;
    let st = this.types.get(typeUrl);
    const first = !st;
    if (!st) {
      st = {
        wildcard: false,
        subscribed: new Set(),
        known: new Map(),
        reportedMissing: new Set(),
        nacked: false,
      };
      this.types.set(typeUrl, st);
      // Only the first request of a type after (re)connecting says what the node already holds.
      for (const [name, version] of Object.entries(req.initial_resource_versions ?? {}))
        st.known.set(name, version);
      // An empty first subscription is the legacy wildcard.
      if (req.resource_names_subscribe.length === 0) st.wildcard = true;
    }

    let subscriptionChanged = first;
    for (const name of req.resource_names_subscribe) {
      subscriptionChanged = true;
      if (name === "*") {
        st.wildcard = true;
        continue;
      }
      st.subscribed.add(name);
      st.reportedMissing.delete(name);
      // A name subscribed again must be sent again, even if the node is thought to hold it.
      if (!first) st.known.delete(name);
    }
    for (const name of req.resource_names_unsubscribe) {
      subscriptionChanged = true;
      if (name === "*") {
        st.wildcard = false;
        continue;
      }
      st.subscribed.delete(name);
      st.reportedMissing.delete(name);
      if (!st.wildcard) st.known.delete(name);
    }

    const nonce = req.response_nonce;
    const answersLatest = !!nonce && nonce === st.lastNonce;
    if (answersLatest) {
      this.inFlight.delete(typeUrl);
      if (req.error_detail && (req.error_detail.code || req.error_detail.message)) {
        st.nacked = true;
        this.recordNack(typeUrl, st.lastVersion ?? "", nonce, req.error_detail);
      } else {
        st.nacked = false;
        this.recordAck(typeUrl, st.lastVersion ?? "");
      }
    }
    if (subscriptionChanged) this.respond(typeUrl, "request");
  }

  protected respond(typeUrl: string, trigger: Trigger): boolean {
    const st = this.types.get(typeUrl);
    if (!st || !this.snapshot) return false;
    const diff = this.diff(typeUrl, st);
    let remove = diff.remove;
    let heldBack = false;
    // Make-before-break: a push sends additions first and removals once they were answered.
    if (trigger === "push" && remove.length > 0) {
      const missing = remove.filter((n) => !st.known.has(n));
      heldBack = missing.length < remove.length;
      if (heldBack) this.removalPending.add(typeUrl);
      remove = missing;
    }
    // The first answer to a wildcard subscription goes out even when empty (also when it waited
    // for the group's first snapshot), so a node that holds nothing learns that there is nothing
    // and can finish initialising, as go-control-plane does.
    const firstEmptyWildcard = st.wildcard && st.lastNonce === undefined && st.known.size === 0;
    if (diff.send.length === 0 && remove.length === 0 && !firstEmptyWildcard) return heldBack;

    for (const r of diff.send) st.known.set(r.name, r.version);
    for (const name of remove) {
      if (st.known.delete(name)) continue;
      st.reportedMissing.add(name);
    }
    const nonce = this.nextNonce();
    const version = this.snapshot.get(typeUrl).version;
    st.lastNonce = nonce;
    st.lastVersion = version;
    const send = diff.send;
    const size =
      send.reduce((n, r) => n + r.delta.length + 4, 0) + remove.reduce((n, r) => n + r.length + 2, 0) + 128;
    this.write(
      typeUrl,
      size,
      () =>
        encodeDeltaResponse(
          version,
          typeUrl,
          send.map((r) => r.delta),
          remove,
          nonce,
        ),
      nonce,
      version,
    );
    return heldBack;
  }

  /** What the node lacks or holds in an older version, and what it holds that is gone. */
  private diff(typeUrl: string, st: DeltaTypeState): { send: EncodedResource[]; remove: string[] } {
    const all = this.snapshot!.get(typeUrl).resources;
    const send: EncodedResource[] = [];
    const remove: string[] = [];
    const consider = (r: EncodedResource) => {
      if (st.known.get(r.name) !== r.version) send.push(r);
    };
    if (st.wildcard) for (const r of all.values()) consider(r);
    for (const name of st.subscribed) {
      const r = all.get(name);
      if (r) {
        if (!st.wildcard) consider(r);
      } else if (!st.known.has(name) && !st.reportedMissing.has(name)) {
        remove.push(name); // "does not exist"
      }
    }
    for (const name of st.known.keys()) {
      if (!all.has(name) && (st.wildcard || st.subscribed.has(name))) remove.push(name);
    }
    return { send, remove };
  }
}
