/**
 * Reading a revision's bytes for the mount: any range, assembled from its blocks, each
 * loaded by the data-path Workers (which prove it against the revision's index) through a
 * small shared cache; zero blocks are never read. A damaged block makes every read that
 * touches it fail (EIO), is logged once, and is tried again after a while (a scrub may
 * repair it). Sequential readers get the next blocks loaded ahead.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { alignedBuffer } from "../util/native/buffer.ts";
import { BLOCK_SIZE, type BlockIndex, hex } from "../repo/index_file.ts";
import type { RevisionData } from "../store/store.ts";
import { DamagedBlockError } from "../store/block_store.ts";
import { GET_BUFFER_SIZE } from "../store/in_place.ts";
import type { WorkerPool } from "../backup/pool.ts";
import type { BlockCache, PinnedBlock } from "./block_cache.ts";
import { SEEK_DATA, SEEK_HOLE } from "./protocol.ts";

/** How long a damaged block's failure is remembered before it is read again. */
export const DAMAGE_RETRY_MS = 30_000;

/** Bytes of an image ready to go out, their blocks pinned until `release()`. */
export interface ReadyRange {
  length: number;
  /** The bytes, in order: views of the cached blocks (and of zeros), valid until release. */
  parts: Uint8Array[];
  release(): void;
}

/** A read touched a damaged block: the whole read fails, never with wrong or zeroed bytes. */
export class DamagedRangeError extends BackyError {}

/**
 * Detects sequential reading (pure). The kernel sends a sequential reader's requests a few
 * at a time, not always in order, so "sequential" means: starting near where reading got to.
 */
export class Readahead {
  #end = -1;
  #run = 0;

  /** `window`: blocks to keep loaded ahead; `slack`: bytes a read may start off the end. */
  constructor(readonly window: number, readonly slack: number) {}

  /** After a read of [offset, offset+size): the blocks to load ahead (none if random). */
  next(offset: number, size: number, blockSize: number, blockCount: number): number[] {
    const sequential = this.#end >= 0 && Math.abs(offset - this.#end) <= this.slack;
    this.#run = sequential ? this.#run + 1 : 0;
    this.#end = sequential ? Math.max(this.#end, offset + size) : offset + size;
    if (this.#run < 1 || size === 0) return [];
    const last = Math.floor((this.#end - 1) / blockSize);
    const out: number[] = [];
    for (let b = last + 1; b <= last + this.window && b < blockCount; b++) out.push(b);
    return out;
  }
}

/**
 * lseek(SEEK_DATA / SEEK_HOLE) over an index (pure): zero blocks are holes, and so is the
 * end of the file. Returns the offset, or -1 for ENXIO (no data after `offset`, or
 * `offset` at or past the end).
 */
export function seekHoleData(
  index: BlockIndex,
  size: number,
  offset: number,
  whence: number,
): number {
  if (offset >= size || offset < 0) return -1;
  const bs = index.blockSize;
  for (let i = Math.floor(offset / bs); i * bs < size; i++) {
    const zero = index.isZero(i);
    if (whence === SEEK_DATA && !zero) return Math.max(offset, i * bs);
    if (whence === SEEK_HOLE && zero) return Math.max(offset, i * bs);
  }
  return whence === SEEK_HOLE ? size : -1;
}

/** What all readers of one mount share: the Workers, the cache, damage seen, read-ahead. */
export class BlockSource {
  #zeros: Uint8Array;
  #damaged = new Map<string, { error: string; at: number }>();
  #logged = new Set<string>();
  #prefetching = 0;

  constructor(
    readonly pool: WorkerPool,
    readonly cache: BlockCache,
    readonly log: Logger,
    /** Blocks loaded ahead at once, over all readers (keeps the cache from thrashing). */
    readonly prefetchMax: number,
  ) {
    this.#zeros = new Uint8Array(BLOCK_SIZE);
  }

  /** `n` zero bytes, as zero blocks read (shared: never written to). */
  zeros(n: number): Uint8Array {
    if (n > this.#zeros.length) this.#zeros = new Uint8Array(n);
    return this.#zeros.subarray(0, n);
  }

  /** A remembered failure for this block, if still fresh. */
  damage(where: string): string | undefined {
    const d = this.#damaged.get(where);
    if (!d) return undefined;
    if (Date.now() - d.at < DAMAGE_RETRY_MS) return d.error;
    this.#damaged.delete(where);
    return undefined;
  }

  /** Remembers a failed block; logs it the first time (per mount). */
  noteDamage(where: string, error: string, what: Record<string, unknown>): void {
    this.#damaged.set(where, { error, at: Date.now() });
    if (this.#damaged.size > 4096) this.#damaged.delete(this.#damaged.keys().next().value!);
    if (!this.#logged.has(where)) {
      this.#logged.add(where);
      this.log.error("Damaged block: reads of it fail with EIO", { ...what, error });
    }
  }
  /** Whether another block may be loaded ahead now; call `done` when it arrived. */
  tryPrefetch(): (() => void) | undefined {
    if (this.#prefetching >= this.prefetchMax) return undefined;
    this.#prefetching++;
    return () => this.#prefetching--;
  }
}

/** One complete revision's bytes. */
export class ImageReader {
  constructor(
    readonly id: string,
    readonly data: RevisionData & { index: BlockIndex },
    readonly source: BlockSource,
  ) {}

  get size(): number {
    return this.data.size;
  }

  /** Number of blocks. */
  get count(): number {
    return this.data.index.count;
  }

  #key(i: number): string {
    return `${hex(this.data.index.digest(i))}:${this.data.index.blockLength(i)}`;
  }

  #where(i: number): string {
    return `${this.id}:${i}`;
  }

  #loader(i: number) {
    const { index, ref } = this.data;
    return async (spare: Uint8Array | undefined) => {
      const r = await this.source.pool.read({
        offset: i * index.blockSize,
        length: index.blockLength(i),
        store: ref,
        digest: index.digest(i).slice(),
        // Room to decode a chunk in place: the Workers then need no frame buffer of their own.
        into: spare ?? alignedBuffer(Math.max(index.blockSize, GET_BUFFER_SIZE)),
      });
      if (!r.data) throw new BackyError(`block ${i} of ${this.id} came back empty`);
      return r.data;
    };
  }

  /**
   * The bytes at [offset, offset+size), up to the end of the image, ready to copy: every
   * block they touch is loaded, checked and pinned. A damaged block anywhere in the range
   * throws DamagedRangeError. Call `release()` when done copying.
   */
  async range(offset: number, size: number): Promise<ReadyRange> {
    const { index } = this.data;
    const end = Math.min(offset + size, this.size);
    if (offset >= end) return { length: 0, parts: [], release() {} };
    const bs = index.blockSize;
    const pieces: { from: number; length: number }[] = [];
    const loads: Promise<PinnedBlock | undefined>[] = [];
    for (let i = Math.floor(offset / bs); i * bs < end; i++) {
      const from = Math.max(offset, i * bs);
      const to = Math.min(end, (i + 1) * bs);
      pieces.push({ from: from - i * bs, length: to - from });
      loads.push(index.isZero(i) ? Promise.resolve(undefined) : this.#acquire(i));
    }
    const results = await Promise.allSettled(loads);
    const blocks = results.map((r) => r.status === "fulfilled" ? r.value : undefined);
    const release = () => {
      for (const b of blocks) b?.release();
    };
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      release();
      throw (failed as PromiseRejectedResult).reason;
    }
    return {
      length: end - offset,
      parts: pieces.map((p, k) => {
        const b = blocks[k];
        return b ? b.data.subarray(p.from, p.from + p.length) : this.source.zeros(p.length);
      }),
      release,
    };
  }

  /** Copies the bytes at `offset` into `into` (up to the end of the image); returns how many. */
  async read(offset: number, into: Uint8Array): Promise<number> {
    const r = await this.range(offset, into.length);
    try {
      let at = 0;
      for (const p of r.parts) {
        into.set(p, at);
        at += p.length;
      }
      return r.length;
    } finally {
      r.release();
    }
  }

  async #acquire(i: number): Promise<PinnedBlock> {
    const where = this.#where(i);
    const known = this.source.damage(where);
    if (known) throw new DamagedRangeError(known);
    try {
      return await this.source.cache.acquire(this.#key(i), this.#loader(i));
    } catch (e) {
      if (!(e instanceof DamagedBlockError)) throw e;
      const bs = this.data.index.blockSize;
      this.source.noteDamage(where, errorMessage(e), {
        revision: this.id,
        offset: i * bs,
        bytes: `${i * bs}-${i * bs + this.data.index.blockLength(i) - 1}`,
      });
      throw new DamagedRangeError(errorMessage(e));
    }
  }

  /** Loads these blocks ahead (as far as the shared limit allows), skipping zero blocks. */
  prefetch(blocks: number[]): void {
    for (const i of blocks) {
      if (this.data.index.isZero(i) || this.source.damage(this.#where(i))) continue;
      const key = this.#key(i);
      if (this.source.cache.has(key)) continue;
      const done = this.source.tryPrefetch();
      if (!done) return;
      this.source.cache.prefetch(key, this.#loader(i)).finally(done);
    }
  }
}
