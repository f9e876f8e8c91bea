/**
 * At most `perSecond` lines a second for what a caller can cause at will (refusals): a flood of
 * bad credentials must not become a flood of log lines. The first line after a cut says how many
 * were left out, so counts stay right; the metrics count every refusal regardless.
 */
export class LogBudget {
  private windowStart = -Infinity;
  private spent = 0;
  private dropped = 0;

  constructor(
    readonly perSecond: number,
    private readonly now: () => number = Date.now,
    private readonly onDrop?: () => void,
  ) {}

  /** Undefined when this line is over budget; otherwise how many were left out before it. */
  take(): { dropped: number } | undefined {
    const t = this.now();
    if (t - this.windowStart >= 1_000) {
      this.windowStart = t;
      this.spent = 0;
    }
    if (this.spent >= this.perSecond) {
      this.dropped++;
      this.onDrop?.();
      return undefined;
    }
    this.spent++;
    const dropped = this.dropped;
    this.dropped = 0;
    return { dropped };
  }
}

/** Refusal lines a second by default: enough to see an attack's shape, too few to fill a disk. */
export const DEFAULT_REFUSAL_LOGS_PER_SECOND = 20;
