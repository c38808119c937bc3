/**
 * A small cache of verified blocks (bounded memory, shared by every open file of a mount).
 * Keys name block content (digest and length): every block is proven against its digest
 * before it enters, so identical blocks of different revisions share one entry. Loads of
 * the same key share one promise. A block in use (acquired and not yet released) or still
 * loading is never evicted; evicted buffers are handed back for the
 * next load, so steady reading allocates nothing new.
 */

interface Slot {
  promise: Promise<Uint8Array>;
  data?: Uint8Array;
  pins: number;
  evicted: boolean;
}

/** A block in use: valid until `release()`. */
export interface PinnedBlock {
  data: Uint8Array;
  release(): void;
}

/** What loads a block; `spare` is a buffer the loader may fill instead of allocating. */
export type BlockLoader = (spare: Uint8Array | undefined) => Promise<Uint8Array>;

export class BlockCache {
  #slots = new Map<string, Slot>();
  #spare: Uint8Array[] = [];

  /** `capacity`: blocks kept when not in use; `spareMax`: evicted buffers kept for reuse. */
  constructor(readonly capacity: number, readonly spareMax = 2) {}

  /** Blocks held (loaded or loading). */
  get size(): number {
    return this.#slots.size;
  }

  /** Whether `key` is cached or loading. */
  has(key: string): boolean {
    return this.#slots.has(key);
  }

  /**
   * The block (loaded first if needed), pinned until `release()`: not evicted, its buffer
   * not reused. Pinned at once, before the load finishes. A failed load releases itself.
   */
  async acquire(key: string, load: BlockLoader): Promise<PinnedBlock> {
    const slot = this.#slot(key, load);
    slot.pins++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      slot.pins--;
      if (slot.evicted && slot.pins === 0) this.#recycle(slot);
    };
    try {
      return { data: await slot.promise, release };
    } catch (e) {
      release();
      throw e;
    }
  }

  /** Runs `fn` on the block while it is pinned (`fn` must copy what it keeps). */
  async use<T>(key: string, load: BlockLoader, fn: (data: Uint8Array) => T): Promise<T> {
    const block = await this.acquire(key, load);
    try {
      return fn(block.data);
    } finally {
      block.release();
    }
  }

  /** Starts loading `key` unless cached or loading (read-ahead); failures are dropped. */
  prefetch(key: string, load: BlockLoader): Promise<void> {
    if (this.#slots.has(key)) return Promise.resolve();
    return this.#slot(key, load).promise.then(() => {}, () => {});
  }

  #slot(key: string, load: BlockLoader): Slot {
    const hit = this.#slots.get(key);
    if (hit) {
      // Most recently used last.
      this.#slots.delete(key);
      this.#slots.set(key, hit);
      return hit;
    }
    const slot: Slot = { promise: undefined!, pins: 0, evicted: false };
    slot.promise = load(this.#spare.pop()).then((data) => {
      slot.data = data;
      if (slot.evicted && slot.pins === 0) this.#recycle(slot);
      return data;
    }, (e) => {
      // Failures are not cached here: the caller decides (a damaged block may be repaired).
      if (this.#slots.get(key) === slot) this.#slots.delete(key);
      throw e;
    });
    this.#slots.set(key, slot);
    this.#evict();
    return slot;
  }

  /** Drops the least recently used idle blocks beyond capacity. */
  #evict(): void {
    if (this.#slots.size <= this.capacity) return;
    for (const [key, slot] of this.#slots) {
      if (this.#slots.size <= this.capacity) break;
      if (slot.pins > 0 || slot.data === undefined) continue;
      this.#slots.delete(key);
      slot.evicted = true;
      this.#recycle(slot);
    }
  }

  #recycle(slot: Slot): void {
    const data = slot.data;
    slot.data = undefined;
    if (!data || this.#spare.length >= this.spareMax) return;
    // The whole buffer, not just the block's length (a short last block).
    const whole = data.buffer.byteLength - data.byteOffset;
    this.#spare.push(new Uint8Array(data.buffer, data.byteOffset, whole));
  }
}
