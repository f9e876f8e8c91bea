import type { Config } from "../model/schema.js";

export interface Revision {
  number: number;
  /** `configRevision(config)`: equal hashes mean equal configs. */
  hash: string;
  config: Config;
  createdAt: string;
  message?: string;
  author?: string;
}

export interface RevisionSummary {
  number: number;
  hash: string;
  createdAt: string;
  message?: string;
  author?: string;
}

export interface CommitMeta {
  message?: string;
  author?: string;
  /** `configRevision(config)`, when the committer has worked it out already: not worked out again. */
  hash?: string;
}

/** The head moved since the caller read it: re-read, re-apply, retry. */
export class StoreConflictError extends Error {
  readonly code = "revision_conflict";

  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super(`the config is at revision ${actual}, not ${expected}`);
    this.name = "StoreConflictError";
  }
}

/**
 * The store could not be read or written. For a commit the outcome may be unknown (the request
 * may have reached Redis before the connection dropped): re-read the head before retrying.
 */
export class StoreUnavailableError extends Error {
  readonly code = "store_unavailable";

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreUnavailableError";
  }
}

export interface ConfigStore {
  readonly kind: "file" | "redis";
  /** Loads state; for Redis connects and subscribes. */
  open(): Promise<void>;
  /** The newest revision, or undefined when nothing was ever written. */
  head(): Promise<Revision | undefined>;
  /** A revision still in the history, or undefined. */
  get(number: number): Promise<Revision | undefined>;
  /** Newest first, at most `limit`. */
  list(limit?: number): Promise<RevisionSummary[]>;
  /**
   * Compare-and-set: succeeds only if the head is still `expected` (0 = empty store). Durable
   * before it resolves. Returns the new revision (number = expected + 1), or rejects with a
   * StoreConflictError carrying the actual head.
   */
  commit(expected: number, config: Config, meta?: CommitMeta): Promise<Revision>;
  /**
   * Called for every new head, including ones written by other replicas and by this instance.
   * Numbers only increase and none is delivered twice; heads that were superseded before they
   * could be read may be skipped. For this instance's own commits the listener runs after
   * `commit()` has resolved, so the committer acts on its revision first.
   */
  watch(listener: (rev: Revision) => void): () => void;
  /** When the store first held the secret with this fingerprint, when it knows. */
  secretCreatedAt?(fingerprint: string): string | undefined;
  close(): Promise<void>;
}
