/**
 * The storage backend of a job (design D17): where a revision's blocks live and how they
 * are written, opened for readers, removed and collected. Implementations: cow.ts,
 * chunked.ts and s3.ts (coordinator side) with their Worker-side block faces (block_store.ts).
 * storeFor() is the only place that chooses between backends.
 */
import type { BlockIndex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { type Backend, isComplete, type Revision } from "../repo/revision.ts";
import type { BlockKind, StoreRef } from "./block_store.ts";
import { CowStore } from "./cow.ts";
import { ChunkedStore } from "./chunked.ts";
import { S3Store } from "./s3.ts";
import type { GcResult } from "./gc.ts";

export type { BlockKind, StoreRef } from "./block_store.ts";
export type { GcResult } from "./gc.ts";

/** What readers (restore, verify, mount) need of a complete revision. */
export interface RevisionData {
  size: number;
  /** Undefined only for legacy 2.1 revisions, whose blocks cannot be checked. */
  index?: BlockIndex;
  ref: StoreRef;
}

/** A block found damaged: where it is in the revision and the digest it should have. */
export interface DamagedBlock {
  digest: Uint8Array;
  length: number;
  offset: number;
}

/** The data of one new revision while a backup writes it. */
export interface RevisionWriter {
  /** Where the Workers put the blocks. */
  readonly ref: StoreRef;
  /** A legacy parent without an index: the Workers hash its blocks to compare (cow). */
  readonly legacyParentImage?: string;
  /** The new revision's size, known before any block arrives. */
  setSize(size: number): Promise<void>;
  /** Notes a block the Workers stored (what this run created is undone by abort). */
  stored(kind: BlockKind, digest: Uint8Array | null, bytes: number): void;
  /** Makes every stored block durable, then writes the index that describes them. */
  commit(index: BlockIndex): Promise<void>;
  /** After a failed copy: frees what this run created (the disk may be full). */
  abort(): Promise<void>;
  /** After verification: the revision's data becomes read-only. */
  seal(): Promise<void>;
  /** Backend-specific statistics for the revision's `.rev` (e.g. bytes_stored). */
  stats(): Record<string, unknown>;
}

/** A remote store's hold on a job for one operation (see Store.claim). */
export interface Claim {
  /** Gives the job up again; never throws. */
  release(): Promise<void>;
}

/** One job's storage backend. */
export interface Store {
  readonly backend: Backend;
  /**
   * Revisions share stored blocks (chunked: one chunk per content), so a block stored anew
   * heals every revision that uses it; else (cow) each revision keeps its own damage.
   */
  readonly sharedBlocks: boolean;
  /** Begins a new revision's data, built on `parent` (cow: a reflink clone of it). */
  begin(
    rev: Revision,
    parent: Revision | undefined,
    parentIndex: BlockIndex | undefined,
  ): Promise<RevisionWriter>;
  /**
   * Opens a complete revision for readers; a clear error when it cannot be read. `unchecked`:
   * serve a revision whose index is lost without hash checks (restore --force).
   */
  open(rev: Revision, opts?: { unchecked?: boolean }): Promise<RevisionData>;
  /** The file name (in the job directory) of a revision's raw image, if it has one. */
  imageName(id: string): string | undefined;
  /** Removes a revision: its metadata first, then its own data. */
  removeRevision(id: string): Promise<void>;
  /**
   * Deletes data no revision references (callers hold both job locks): chunks, or images
   * whose revision was removed.
   */
  collectGarbage(): Promise<GcResult>;
  /** Moves damaged blocks aside so the next backup stores them anew; returns what moved. */
  quarantine(blocks: DamagedBlock[]): Promise<string[]>;
  /**
   * Remote stores only (s3): called under the job's local locks before an operation that
   * changes the job (`op`: backup, expire, tags) reads its revisions. Takes the job's lease
   * (refused while another host holds it) and brings the job directory up to date from the
   * remote copy. Release it when done.
   */
  claim?(op: string): Promise<Claim>;
  /**
   * Remote stores only: after a complete revision's `.rev` was written (new, re-tagged,
   * trust changed), publishes it, so other hosts see the job as this one does.
   */
  publish?(rev: Revision): Promise<void>;
  /** Remote stores only: brings the job directory up to date with the remote copy. */
  pull?(): Promise<PullResult>;
}

/** What a pull changed in the job directory. */
export interface PullResult {
  fetched: number;
  removed: number;
  published: number;
}

const STORES: Record<Backend, new (job: JobDir) => Store> = {
  cow: CowStore,
  chunked: ChunkedStore,
  s3: S3Store,
};

/** The backends a job can use, as `init --backend` names them. */
export const BACKENDS = Object.keys(STORES) as Backend[];

/** The store of `job` for revisions of `backend` (default: the job's configured backend). */
export function storeFor(job: JobDir, backend: Backend = job.config.backend): Store {
  return new STORES[backend](job);
}

/**
 * Revisions a new revision of `store` may build on (diff against, clone): complete, not
 * distrusted, of the same backend; oldest first.
 */
export function parentCandidates(revisions: Revision[], store: Store): Revision[] {
  return revisions.filter((r) =>
    isComplete(r) && r.trust !== "distrusted" && r.backend === store.backend
  );
}
