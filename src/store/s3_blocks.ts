/**
 * Blocks of an s3 revision, as a data Worker sees them (design D17, docs/s3.md): chunk
 * objects in the chunked store's format, content-addressed and shared by every job and host
 * of the bucket. A chunk is uploaded only when absent: the parent's index says which are
 * there without asking (the known list), others cost one HEAD. Uploads run in the
 * background, at most `uploads` per Worker (bounded memory); `close` waits for them and
 * reports the first failure. Reads are hash-checked. Chunks the garbage collector has
 * condemned are protected with a keep marker before they are reused.
 */
import { BackyError } from "../util/errors.ts";
import { BlockIndex, hex } from "../repo/index_file.ts";
import type { BlockStore } from "./block_store.ts";
import { DamagedBlockError } from "./block_store.ts";
import { packBlock, unpackBlock } from "./chunkfile.ts";
import { S3Client, type S3Endpoint } from "./s3_client.ts";
import {
  chunkKey,
  decodeDigests,
  GC_LEASE,
  GC_STATE,
  type GcState,
  isLive,
  keepKey,
  parseGcState,
  parseLease,
} from "./s3_layout.ts";

/** Where an s3 revision's blocks live, as sent to the Workers. */
export interface S3Ref {
  backend: "s3";
  s3: S3Endpoint;
  /** The parent's index file: its chunks are in the bucket (no HEAD needed). */
  known?: string;
  /** The collector's condemned list, when one was out as the backup began. */
  condemned?: { gc: string; file: string };
  /** Uploads in flight per Worker. */
  uploads: number;
}

/** A block as a chunk object (the chunk file format), in a buffer of its own. */
export function packChunk(data: Uint8Array): Uint8Array {
  return packBlock(data).slice(); // packBlock's buffer is reused by the next call
}

/** A chunk object's content, proven to be `length` bytes hashing to `digest`. */
export function unpackChunk(
  packed: Uint8Array,
  digest: Uint8Array,
  length: number,
  where: string,
  into?: Uint8Array,
): Uint8Array {
  const data = unpackBlock(packed, digest, length, where, into);
  // Without `into`, a buffer the next call reuses: the caller may keep what it gets here.
  return into && data.buffer === into.buffer ? data : data.slice();
}

export class S3Blocks implements BlockStore {
  private readonly client: S3Client;
  private known?: Set<string>;
  private condemned?: Set<string>;
  /** Chunks this Worker stored or found present in this run. */
  private present = new Set<string>();
  private inflight = new Set<Promise<void>>();
  private failure: unknown;

  constructor(readonly ref: S3Ref) {
    this.client = new S3Client(ref.s3);
  }

  private where(digest: Uint8Array): string {
    return `s3://${this.ref.s3.bucket}/${chunkKey(digest)}`;
  }

  private knownSet(): Set<string> {
    if (!this.known) {
      this.known = new Set();
      if (this.ref.known) {
        const index = BlockIndex.decode(Deno.readFileSync(this.ref.known), this.ref.known);
        for (let i = 0; i < index.count; i++) {
          if (!index.isZero(i)) this.known.add(hex(index.digest(i)));
        }
      }
    }
    return this.known;
  }

  private condemnedSet(): Set<string> {
    if (!this.condemned) {
      const c = this.ref.condemned;
      this.condemned = c ? decodeDigests(Deno.readFileSync(c.file)) : new Set();
    }
    return this.condemned;
  }

  async get(offset: number, length: number, digest: Uint8Array | undefined, into?: Uint8Array) {
    if (digest === undefined) {
      throw new DamagedBlockError(
        `block at offset ${offset} has no digest: an s3 revision needs its index`,
        this.ref.s3.bucket,
      );
    }
    const packed = await this.client.get(chunkKey(digest));
    if (!packed) {
      throw new DamagedBlockError(`chunk ${this.where(digest)} is missing`, this.where(digest));
    }
    return unpackChunk(packed, digest, length, this.where(digest), into);
  }

  /**
   * A new revision's chunks that its parent already had were proven when the parent was
   * made and stay while its index is in the bucket: no request (reading back a whole VM
   * after every incremental would cost its full size in GETs). Everything else is read
   * and hash-checked; `backy verify` reads every chunk (its refs carry no parent).
   */
  async check(offset: number, length: number, digest: Uint8Array | null) {
    if (digest === null) return { ok: true };
    const h = hex(digest);
    if (this.ref.known && this.knownSet().has(h) && !this.condemnedSet().has(h)) {
      return { ok: true };
    }
    try {
      await this.get(offset, length, digest);
      return { ok: true };
    } catch (e) {
      if (!(e instanceof DamagedBlockError)) throw e;
      return { ok: false, reason: e.message };
    }
  }

  hasParentBlock(_offset: number, digest: Uint8Array): Promise<boolean> {
    return this.available(hex(digest));
  }

  parentBytes(_offset: number, _length: number, digest: Uint8Array, parentLength: number) {
    return this.get(_offset, parentLength, digest);
  }

  async write(_offset: number, data: Uint8Array, digest: Uint8Array): Promise<number> {
    if (this.failure) throw this.failure;
    const h = hex(digest);
    if (await this.available(h)) return 0;
    const packed = packChunk(data);
    while (this.inflight.size >= this.ref.uploads) await Promise.race(this.inflight);
    if (this.failure) throw this.failure;
    this.present.add(h);
    const p: Promise<void> = this.client.put(chunkKey(h), packed).then(
      () => {},
      (e) => {
        this.present.delete(h);
        this.failure ??= e;
      },
    ).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
    return packed.length;
  }

  /**
   * Whether the chunk can be reused as it is: stored or seen in this run, listed in the
   * parent's index (no request), else one HEAD. A condemned chunk is protected first.
   */
  private async available(h: string): Promise<boolean> {
    if (this.present.has(h)) return true;
    if (this.condemnedSet().has(h)) {
      if (!(await this.protect(h))) return await this.head(h); // swept or not: HEAD says
    } else if (!this.knownSet().has(h)) {
      return await this.head(h);
    }
    this.present.add(h);
    return true;
  }

  private async head(h: string): Promise<boolean> {
    const found = (await this.client.head(chunkKey(h))) !== undefined;
    if (found) this.present.add(h);
    return found;
  }

  /**
   * Keeps a condemned chunk from the sweep: the keep marker goes out first, then the
   * collector's phase is read. Still "condemned" (same list): the sweep, which lists keep
   * markers only after it says "deleting", will see ours, so the chunk stays. Otherwise
   * (sweeping or done) it may be gone: wait for the sweep to end and report false.
   */
  private async protect(h: string): Promise<boolean> {
    const gc = this.ref.condemned!.gc;
    await this.client.put(keepKey(gc, h), new Uint8Array(0));
    while (true) {
      const state = await this.gcState();
      if (state?.id !== gc) return false;
      if (state.phase === "condemned") return true;
      // Sweeping: wait until it ends, or until its lease lapses (a dead collector).
      const lease = await this.client.get(GC_LEASE);
      if (!lease || !isLive(parseLease(lease), this.client.serverNow())) return false;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  private async gcState(): Promise<GcState | undefined> {
    const bytes = await this.client.get(GC_STATE);
    if (!bytes) return undefined;
    try {
      return parseGcState(bytes);
    } catch (e) {
      throw new BackyError(`s3 bucket '${this.ref.s3.bucket}': ${e}`);
    }
  }

  zero(): void {}

  async close(): Promise<void> {
    await Promise.allSettled(this.inflight);
    const failure = this.failure;
    this.failure = undefined;
    this.present.clear();
    if (failure) throw failure;
  }
}
