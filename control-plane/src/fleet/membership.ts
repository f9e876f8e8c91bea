import type { FleetState } from "../xds/fleet.js";

export interface GroupMembershipOptions {
  fleet: FleetState;
  /** Called once the fleet has been quiet for `quietMs` after Envoys joined or left. */
  onChange: () => void;
  /** Quiet time after the last join or leave; default 1 s. */
  quietMs?: number;
  /** Longest hold-off from the first join or leave of a burst, however busy; default 5 s. */
  maxWaitMs?: number;
}

/**
 * How many Envoys of each gateway group are connected, across replicas (FleetState's view), and
 * a debounced signal when that changes: a rolling restart, where Envoys leave and join one after
 * the other, makes one re-division per quiet spell, not one per Envoy.
 */
export class GroupMembership {
  private readonly quietMs: number;
  private readonly maxWaitMs: number;
  private timer?: NodeJS.Timeout;
  private burstStart = 0;
  private readonly onEvent = () => this.schedule();

  constructor(private readonly opts: GroupMembershipOptions) {
    this.quietMs = opts.quietMs ?? 1_000;
    this.maxWaitMs = Math.max(this.quietMs, opts.maxWaitMs ?? 5_000);
    opts.fleet.on("connect", this.onEvent);
    opts.fleet.on("disconnect", this.onEvent);
  }

  /** Connected nodes per group (gateway groups and the policy group alike). */
  counts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const n of this.opts.fleet.view()) out.set(n.group, (out.get(n.group) ?? 0) + 1);
    return out;
  }

  private schedule(): void {
    const now = Date.now();
    if (this.timer) clearTimeout(this.timer);
    else this.burstStart = now;
    const wait = Math.min(this.quietMs, Math.max(0, this.burstStart + this.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.opts.onChange();
    }, wait);
    this.timer.unref();
  }

  stop(): void {
    this.opts.fleet.off("connect", this.onEvent);
    this.opts.fleet.off("disconnect", this.onEvent);
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
