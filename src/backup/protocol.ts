/**
 * Requests between the data-path coordinator and its Workers (one per core, design D5): a
 * typed table of operations, each a request and its result. Block buffers travel by
 * transfer, never as structured-clone copies.
 */
import type { BlockKind, StoreRef } from "../store/block_store.ts";

/** Stores one block of a new revision. */
export interface StoreRequest {
  offset: number;
  length: number;
  store: StoreRef;
  content:
    /** Read it from this local file at the same offset (file sources). */
    | { from: "file"; path: string }
    /** These bytes; `uncovered` ranges take the parent's bytes ("parent") or zeros. */
    | { from: "data"; data: Uint8Array; uncovered: [number, number][]; base: "zero" | "parent" }
    /** All zeros. */
    | { from: "zero" };
  /** The parent's digest here; null = the parent has nothing (zeros); undefined = unknown. */
  parentDigest?: Uint8Array | null;
  /** Unknown parent digest (legacy parent without index): hash this image's block instead. */
  parentImage?: string;
  /** Length of the parent's block (differs from `length` at a resized image's end). */
  parentLength: number;
  /** Store the block even where it looks present (healing a damaged copy). */
  rewrite?: boolean;
}

export interface StoreResult {
  kind: BlockKind;
  digest: Uint8Array | null;
  /** Bytes that landed on disk (compressed size for chunks). */
  stored: number;
  /** A `data` request's buffer, handed back for reuse. */
  buffer?: Uint8Array;
}

/** Checks that a stored block matches its index. */
export interface CheckRequest {
  offset: number;
  length: number;
  store: StoreRef;
  digest: Uint8Array | null;
}

export interface CheckResult {
  ok: boolean;
  reason?: string;
}

/** Reads a stored block, checked against `digest`. */
export interface ReadRequest {
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

/** Every operation a Worker serves: [request, result]. */
export interface Ops {
  store: [StoreRequest, StoreResult];
  check: [CheckRequest, CheckResult];
  read: [ReadRequest, ReadResult];
  /** Closes cached descriptors (before the coordinator fsyncs and renames). */
  close: [Record<string, never>, null];
}

export type Op = keyof Ops;

/** A request as posted to a Worker. */
export interface WorkerMessage<K extends Op = Op> {
  id: number;
  op: K;
  req: Ops[K][0];
}

/** A Worker's answer: a result, or an error's message, code and name. */
export type WorkerReply =
  | { ready: true }
  | { id: number; result: unknown }
  | { id: number; error: string; code?: string; name?: string };
