/** Messages between the data-path coordinator and its Workers (one per core, design D5). */
import type { Backend } from "../repo/revision.ts";

/** Where a revision's blocks live. */
export type StoreRef =
  | { backend: "cow"; image: string }
  | { backend: "chunked"; chunks: string };

export interface BackupBlock {
  op: "backup";
  offset: number;
  length: number;
  source: string;
  store: StoreRef;
  /** Parent's digest for this block; null = zero/absent; undefined = unknown (legacy). */
  parentDigest?: Uint8Array | null;
  /** Legacy parent image without index: hash its block to compare. */
  parentImage?: string;
}

export type BlockKind = "zero" | "same" | "written" | "dedup";

export interface BackupResult {
  kind: BlockKind;
  digest: Uint8Array | null;
  /** Bytes that landed on disk (compressed size for chunks). */
  stored: number;
}

export interface CheckBlock {
  op: "check";
  offset: number;
  length: number;
  store: StoreRef;
  digest: Uint8Array | null;
}

export interface CheckResult {
  ok: boolean;
  reason?: string;
}

export interface ReadBlock {
  op: "read";
  offset: number;
  length: number;
  store: StoreRef;
  /** null = all-zero block; undefined = legacy image without index (no hash to check). */
  digest?: Uint8Array | null;
  /** A spare buffer (moved to the Worker) to return the data in, instead of a new one. */
  into?: Uint8Array;
  /** Write into this file at `offset` instead of returning the data. */
  out?: { path: string; writeZeros: boolean };
}

export interface ReadResult {
  data?: Uint8Array;
  zero: boolean;
}

/**
 * A block assembled from a stream of changes (rbd diffs): `data` holds the bytes the stream
 * covered (anything elsewhere: the buffer is reused); `uncovered` ranges take the parent's
 * bytes when `base` is "parent", else zeros. Then it is stored like a backup block.
 */
export interface ApplyBlock {
  op: "apply";
  offset: number;
  length: number;
  data: Uint8Array;
  uncovered: [number, number][];
  base: "zero" | "parent";
  store: StoreRef;
  parentDigest: Uint8Array | null;
  /** Length of the parent's block (differs from `length` at a resized image's end). */
  parentLength: number;
}

export interface ApplyResult extends BackupResult {
  /** The block buffer, handed back for reuse. */
  buffer: Uint8Array;
}

export type Request = BackupBlock | CheckBlock | ReadBlock | ApplyBlock | { op: "close" };
export type Backends = Backend;
