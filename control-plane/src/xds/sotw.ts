import { createHash } from "node:crypto";
import { encodeSotwBody, withNonce, type DiscoveryRequest } from "@portico/common";
import type { EncodedResource, Snapshot } from "./snapshot.js";
import { XdsStream, type Trigger } from "./stream.js";
import { isFullStateType, TypeUrl } from "./types.js";

interface SotwTypeState {
  /** Requested names; null is "everything" (wildcard on LDS/CDS). Interned: streams asking for the same names share one set. */
  names: ReadonlySet<string> | null;
  namesKey: string;
  /** The version of the latest response, and the nonce it went with. */
  sentVersion?: string;
  lastNonce?: string;
  ackedVersion?: string;
  /**
   * For LDS/CDS: what the node holds, so removed resources can be kept until the second phase.
   * A snapshot's shared array, not a per-stream copy: memory per stream stays constant.
   */
  held: readonly EncodedResource[];
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
      st = { names: null, namesKey: "*", held: [], forceNext: true };
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

    let namesChanged = false;
    // Envoy repeats every name on every ACK; only a real change is worth sorting and interning.
    if (!sameNames(st.names, req.resource_names, isFullStateType(typeUrl))) {
      const next =
        req.resource_names.length === 0 && isFullStateType(typeUrl) ? null : internNames(req.resource_names);
      const key = next ? next.key : "*";
      namesChanged = key !== st.namesKey;
      st.names = next ? next.set : null;
      st.namesKey = key;
    }

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
      const removed = st.held.filter((r) => !view.names.has(r.name));
      if (trigger === "push" && removed.length > 0) {
        heldBack = true;
        this.removalPending.add(typeUrl);
        resources = [...resources, ...removed];
        version = `${view.version}+${hashNames(removed.map((r) => r.name))}`;
      }
      st.held = resources;
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
    this.write(
      typeUrl,
      body.length + nonce.length + 2,
      () => withNonce(body, NONCE_FIELD, nonce),
      nonce,
      version,
    );
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

  /**
   * The resources of a type this stream asked for, and a version that covers exactly those.
   * Memoised on the snapshot: every stream with the same subscription shares one view.
   */
  private view(snapshot: Snapshot, typeUrl: string, st: SotwTypeState): View {
    return snapshot.memoView(`view\0${typeUrl}\0${st.namesKey}`, () =>
      buildView(snapshot, typeUrl, st.names),
    );
  }
}

interface View {
  version: string;
  resources: EncodedResource[];
  names: ReadonlySet<string>;
}

function buildView(snapshot: Snapshot, typeUrl: string, names: ReadonlySet<string> | null): View {
  const all = snapshot.get(typeUrl);
  if (names === null) {
    return {
      version: all.version,
      resources: [...all.resources.values()],
      names: new Set(all.resources.keys()),
    };
  }
  const resources: EncodedResource[] = [];
  for (const name of names) {
    const r = all.resources.get(name);
    if (r) resources.push(r);
  }
  resources.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const h = createHash("sha256");
  for (const r of resources) h.update(r.name).update("\0").update(r.version).update("\n");
  return { version: h.digest("hex").slice(0, 20), resources, names: new Set(resources.map((r) => r.name)) };
}

function sameNames(current: ReadonlySet<string> | null, requested: string[], fullState: boolean): boolean {
  if (current === null) return requested.length === 0 && fullState;
  if (current.size !== requested.length) return false;
  for (const n of requested) if (!current.has(n)) return false;
  return true;
}

/** Streams of one group ask for the same names; they share one set (bounded: least recently made go first). */
const interned = new Map<string, { key: string; set: ReadonlySet<string> }>();
const INTERN_LIMIT = 256;

function internNames(names: string[]): { key: string; set: ReadonlySet<string> } {
  const set = new Set(names);
  const key = [...set].sort().join("\n");
  let entry = interned.get(key);
  if (!entry) {
    entry = { key, set };
    interned.set(key, entry);
    if (interned.size > INTERN_LIMIT) interned.delete(interned.keys().next().value!);
  }
  return entry;
}

function hashNames(names: string[]): string {
  return createHash("sha256").update(names.sort().join("\n")).digest("hex").slice(0, 8);
}
