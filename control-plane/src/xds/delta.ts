import { encodeDeltaBody, type DeltaDiscoveryRequest } from "@portico/common";
import type { Snapshot } from "./snapshot.js";
import { sharedResponse, XdsStream, type Trigger } from "./stream.js";
import { TypeUrl } from "./types.js";
import {
  changeBetween,
  NO_CHANGE,
  subscription,
  viewOf,
  WILDCARD,
  type Change,
  type Subscription,
  type View,
} from "./views.js";

/** The node holds nothing under this name and was told nothing about it. */
const NOT_HELD = Symbol("not held");
/** A version held, null for "told it does not exist", or nothing. */
type Held = string | null | typeof NOT_HELD;

/**
 * What a node holds of one type: the view it was last brought to (shared with every stream that
 * holds the same), and the few names where it differs from that view. A stream in step with its
 * group holds no per-stream copy of anything.
 */
interface Holding {
  base?: View;
  diverged: Map<string, Held>;
}

interface DeltaTypeState {
  typeUrl: string;
  sub: Subscription;
  holding: Holding;
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
    if (!st || st.nacked || !this.snapshot) return false;
    const change = this.changeFor(this.snapshot, st);
    return change.send.length === 0 && change.remove.length === 0;
  }

  protected holdsEndpoints(names: readonly string[]): boolean {
    const st = this.types.get(TypeUrl.Endpoint);
    if (!st || st.nacked) return false;
    return names.every((n) => typeof heldVersion(st.holding, n) === "string");
  }

  protected onRequest(req: DeltaDiscoveryRequest): void {
    const typeUrl = this.accept(req);
    if (!typeUrl) return;
    let st = this.types.get(typeUrl);
    const first = !st;
    if (!st) {
      // Only the first request of a type after (re)connecting says what the node already holds.
      const diverged = new Map<string, Held>(Object.entries(req.initial_resource_versions ?? {}));
      // An empty first subscription is the legacy wildcard.
      const wildcard = req.resource_names_subscribe.length === 0;
      st = {
        typeUrl,
        sub: wildcard ? WILDCARD : subscription(false, []),
        holding: { diverged },
        nacked: false,
      };
      this.types.set(typeUrl, st);
    }

    const subscribe = req.resource_names_subscribe;
    const unsubscribe = req.resource_names_unsubscribe;
    if (subscribe.length > 0 || unsubscribe.length > 0) {
      let wildcard = st.sub.wildcard;
      const names = new Set(st.sub.names);
      for (const name of subscribe) {
        if (name === "*") wildcard = true;
        else {
          names.add(name);
          // A name subscribed again must be sent again, even if the node is thought to hold it.
          if (!first) st.holding.diverged.set(name, NOT_HELD);
        }
      }
      for (const name of unsubscribe) {
        if (name === "*") wildcard = false;
        else {
          names.delete(name);
          if (!wildcard) st.holding.diverged.set(name, NOT_HELD);
        }
      }
      st.sub = subscription(wildcard, names);
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
    if (first || subscribe.length > 0 || unsubscribe.length > 0) this.respond(typeUrl, "request");
  }

  protected answer(typeUrl: string, trigger: Trigger): boolean {
    const st = this.types.get(typeUrl);
    const snapshot = this.snapshot;
    if (!st || !snapshot) return false;
    const target = viewOf(snapshot, typeUrl, st.sub);
    const change = this.changeFor(snapshot, st, target);
    let remove = change.remove;
    // Make-before-break: a push sends additions first and removals of what the node holds once
    // they were answered; "does not exist" for what it never held goes at once.
    const heldBack = new Map<string, Held>();
    if (trigger === "push" && remove.length > 0) {
      for (const name of remove) {
        const held = heldVersion(st.holding, name);
        if (typeof held === "string") heldBack.set(name, held);
      }
      if (heldBack.size > 0) {
        this.removalPending.add(typeUrl);
        remove = remove.filter((n) => !heldBack.has(n));
      }
    }
    // The first answer to a wildcard subscription goes out even when empty (also when it waited
    // for the group's first snapshot), so a node that holds nothing learns that there is nothing
    // and can finish initialising, as go-control-plane does.
    const before = st.holding;
    const firstEmptyWildcard =
      st.sub.wildcard &&
      st.lastNonce === undefined &&
      before.base === undefined &&
      before.diverged.size === 0;
    // The node now holds the target view, but for removals still to come.
    st.holding = { base: target, diverged: heldBack };
    if (change.send.length === 0 && remove.length === 0 && !firstEmptyWildcard) return heldBack.size > 0;

    if (typeUrl === TypeUrl.Cluster)
      this.clustersAdded(change.send.filter((r) => typeof heldVersion(before, r.name) !== "string"));
    const version = snapshot.get(typeUrl).version;
    const encode = () =>
      sharedResponse(
        encodeDeltaBody(
          version,
          typeUrl,
          change.send.map((r) => r.delta),
          remove,
        ),
      );
    // A node in step with its view gets the response every such node gets (removals held back or not).
    const response =
      before.diverged.size === 0
        ? snapshot.memoType(
            typeUrl,
            `delta\0${before.base?.id ?? 0}\0${target.id}\0${heldBack.size > 0}`,
            encode,
          )
        : encode();
    st.lastVersion = version;
    st.lastNonce = this.send(typeUrl, response, version);
    return heldBack.size > 0;
  }

  /**
   * What the node lacks or holds in another version, and what it holds that is gone: the shared
   * change between views, corrected for the names where this stream's node differs.
   */
  private changeFor(
    snapshot: Snapshot,
    st: DeltaTypeState,
    target = viewOf(snapshot, st.typeUrl, st.sub),
  ): Change {
    const { base, diverged } = st.holding;
    const shared = changeBetween(snapshot, base, target);
    if (diverged.size === 0) return shared;
    const send = shared.send.filter((r) => !diverged.has(r.name));
    const remove = shared.remove.filter((n) => !diverged.has(n));
    for (const [name, held] of diverged) {
      const wanted = target.entries.get(name);
      if (wanted) {
        if (held !== wanted.version) send.push(wanted);
      } else if (wanted === null) {
        if (held !== null) remove.push(name);
      } else if (typeof held === "string") remove.push(name);
    }
    return send.length === 0 && remove.length === 0 ? NO_CHANGE : { send, remove };
  }
}

function heldVersion(holding: Holding, name: string): Held {
  if (holding.diverged.has(name)) return holding.diverged.get(name)!;
  const r = holding.base?.entries.get(name);
  return r === undefined ? NOT_HELD : r === null ? null : r.version;
}
