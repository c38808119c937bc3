/**
 * Where a new revision's blocks come from (design D17). A Source checks itself, picks the
 * parent to build on, and for one backup yields the new revision's size and then every
 * block exactly once, in order, as events; one writer (backup/backup.ts) stores them and
 * owns accounting, commit, verification and abort. Implementations: file.ts, ceph/source.ts
 * (also for flyingcircus). sourceFor() (sources/registry.ts) picks one.
 */
import type { BlockIndex } from "../repo/index_file.ts";
import type { Revision } from "../repo/revision.ts";

/** One block of the new revision, as the source delivers it (`block` = block number). */
export type BlockEvent =
  /** The Worker reads the block itself from this local file (positional read, same offset). */
  | { kind: "file"; block: number; path: string }
  /**
   * Bytes the source sent in `data` (a page-aligned block buffer; anything in `uncovered`
   * is garbage): those ranges take the parent's bytes (`base` "parent") or zeros.
   */
  | {
    kind: "data";
    block: number;
    data: Uint8Array;
    uncovered: [number, number][];
    base: "zero" | "parent";
  }
  /** The same content as the parent's block, and the source knows it without reading. */
  | { kind: "unchanged"; block: number }
  /** All zeros, where the parent has nothing either (e.g. space an image grew by). */
  | { kind: "zero"; block: number };

/** The new revision's size (always first), then its blocks. */
export type SourceEvent = { kind: "size"; size: number } | BlockEvent;

/** Reads the snapshot a revision was taken from, for sampled verification. */
export interface SampleReader {
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** One backup's view of the source. */
export interface SourceRun {
  /** Size first, then every block exactly once, in order. */
  events: AsyncIterable<SourceEvent>;
  /** Hands back a `data` event's buffer once its block is stored, for reuse. */
  recycle(buffer: Uint8Array): void;
  /**
   * Verification against the source by a random sample of blocks (Ceph: the snapshot,
   * read again through another path), instead of in full against this run's own hashes.
   */
  sample?: {
    method: string;
    /** What is read, for messages (e.g. "snapshot backy-ID"). */
    against: string;
    open(): Promise<SampleReader>;
  };
  /**
   * The block's content once more, for healing a block that failed verification (sources
   * that can read a block again: files); undefined where the data is gone (a stream).
   */
  reread?(block: number): { from: "file"; path: string };
  /** What to record in the revision's stats (e.g. bytes_received, mode). */
  stats(): Record<string, unknown>;
  /** Releases what the run holds (readers, processes); once, success or not. */
  close(): Promise<void>;
}

/** A source of revisions for one job. */
export interface Source {
  /** Data-path Workers per core: more where they mostly wait for I/O. */
  readonly workersPerCore: number;
  /**
   * Before the revision exists: fails early (nothing created) when the source is not
   * ready, and picks the parent among `candidates` (complete, trusted, same store; oldest
   * first). `info` goes into the "Creating revision" log line.
   */
  prepare(candidates: Revision[]): Promise<{ parent?: Revision; info: Record<string, unknown> }>;
  /** Starts reading for `rev`, built on `parent` (whose index is `parentIndex`, if any). */
  start(
    rev: Revision,
    parent: Revision | undefined,
    parentIndex: BlockIndex | undefined,
  ): Promise<SourceRun>;
  /** Afterwards, success or not; `newestGood` is the newest complete, trusted revision. */
  finish(newestGood: Revision | undefined): Promise<void>;
}
