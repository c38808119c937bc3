/**
 * The Worker-side face of a store (design D17): put and get blocks of one revision,
 * synchronously, inside the data-path Workers. Every block read through it is checked
 * against the digest its index gives, once, whatever the backend. Implementations:
 * cow_blocks.ts, chunked_blocks.ts; blocks.ts picks one for a StoreRef.
 */
import { BackyError } from "../util/errors.ts";
import type { S3Ref } from "./s3_blocks.ts";

/** Where a revision's blocks live, as sent to the Workers (structured-clone safe). */
export type StoreRef =
  | { backend: "cow"; image: string }
  | { backend: "chunked"; chunks: string }
  | S3Ref;

/** How a block reached the store: a hole, the parent's, newly written, or deduplicated. */
export type BlockKind = "zero" | "same" | "written" | "dedup";

/** A stored block's content did not match its digest (or could not be read at all). */
export class DamagedBlockError extends BackyError {
  constructor(message: string, readonly location: string) {
    super(message);
    this.name = "DamagedBlockError";
  }
}

/** A value, or a promise of it: local stores answer at once, remote ones (S3) later. */
export type Maybe<T> = T | Promise<T>;

/**
 * One revision's blocks in a store, as a Worker sees them. Local stores answer
 * synchronously (node:fs calls inside the Worker); a remote store may answer with promises.
 */
export interface BlockStore {
  /**
   * Block content at `offset`, proven to match `digest` (throws DamagedBlockError), or
   * unchecked when `digest` is undefined (legacy revisions without an index). Zero blocks
   * are never asked for. The bytes land in `into` when given and large enough, else in a
   * buffer the next call may reuse.
   */
  get(
    offset: number,
    length: number,
    digest: Uint8Array | undefined,
    into?: Uint8Array,
  ): Maybe<Uint8Array>;
  /** Whether the block the index gives as `digest` is stored (zero: `digest` null). */
  check(
    offset: number,
    length: number,
    digest: Uint8Array | null,
  ): Maybe<{ ok: boolean; reason?: string }>;
  /** Whether a block equal to the parent's `digest` is present for a new revision as is. */
  hasParentBlock(offset: number, digest: Uint8Array): Maybe<boolean>;
  /** The parent's bytes of this block (to fill what a diff left out), checked. */
  parentBytes(
    offset: number,
    length: number,
    digest: Uint8Array,
    parentLength: number,
  ): Maybe<Uint8Array>;
  /** Stores a non-zero block; returns the bytes that landed (0: already present). */
  write(offset: number, data: Uint8Array, digest: Uint8Array): Maybe<number>;
  /** Records an all-zero block; `parentHadData`: the new revision inherited data there. */
  zero(offset: number, length: number, parentHadData: boolean): Maybe<void>;
  /** Closes cached descriptors (before the coordinator fsyncs and renames). */
  close(): Maybe<void>;
}
