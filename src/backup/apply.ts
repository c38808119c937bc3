/**
 * Applies a stream of changes (the records of an rbd diff, ordered by offset) to a new
 * revision: assembles 4 MiB blocks in memory, hands each to a Worker that fills the gaps
 * from the parent, hashes, and stores only what differs (design D4, D5). Never buffers
 * more than a window of blocks, whatever the size of the change.
 */
import { BackyError } from "../util/errors.ts";
import { alignedBuffer } from "../util/fs.ts";
import { BLOCK_SIZE, blockCount, BlockIndex, hex } from "../repo/index_file.ts";
import type { DiffRecord } from "../sources/ceph/diff.ts";
import type { StoreRef } from "./protocol.ts";
import type { WorkerPool } from "./pool.ts";

export interface ApplyOptions {
  /** "diff": untouched blocks keep the parent's content; "full": the stream is everything. */
  mode: "diff" | "full";
  store: StoreRef;
  parentIndex?: BlockIndex;
  /** Called once the image size is known (before any data), e.g. to truncate a cow image. */
  onSize: (size: number) => Promise<void>;
  /** Expected snapshot names (checked against the stream's `f`/`t` records). */
  fromSnap?: string;
  toSnap: string;
}

export interface ApplyStats {
  size: number;
  index: BlockIndex;
  changed: number;
  unchanged: number;
  zero: number;
  written: number;
  stored: number;
  received: number;
  touchedChunkDirs: Set<string>;
}

interface Current {
  index: number;
  buf: Uint8Array;
  covered: [number, number][];
}

export async function applyDiff(
  records: AsyncIterable<DiffRecord>,
  pool: WorkerPool,
  opts: ApplyOptions,
): Promise<ApplyStats> {
  let size: number | undefined;
  let index: BlockIndex | undefined;
  const parent = opts.parentIndex;
  const stats = {
    changed: 0,
    unchanged: 0,
    zero: 0,
    written: 0,
    stored: 0,
    received: 0,
    touchedChunkDirs: new Set<string>(),
  };
  const free: Uint8Array[] = [];
  const window = pool.size * 3;
  const inflight: Promise<void>[] = [];
  let next = 0; // first block not dispatched yet
  let cur: Current | undefined;
  let ended = false;

  const parentDigest = (i: number) =>
    parent && i < parent.count && !parent.isZero(i) ? parent.digest(i).slice() : null;
  const parentLength = (i: number) => (parent && i < parent.count ? parent.blockLength(i) : 0);

  const dispatch = async (i: number, buf: Uint8Array, covered: [number, number][]) => {
    const length = index!.blockLength(i);
    const uncovered = gaps(covered, length);
    while (inflight.length >= window) await inflight.shift();
    const p = pool.apply({
      offset: i * BLOCK_SIZE,
      length,
      data: buf,
      uncovered,
      base: opts.mode === "diff" ? "parent" : "zero",
      store: opts.store,
      parentDigest: parentDigest(i),
      parentLength: parentLength(i),
    }).then((r) => {
      free.push(r.buffer);
      index!.set(i, r.digest);
      if (r.kind === "zero") stats.zero++;
      else if (r.kind === "same") stats.unchanged++;
      else {
        stats.changed++;
        stats.written += length;
        stats.stored += r.stored;
        if (r.kind === "written" && r.digest && opts.store.backend === "chunked") {
          stats.touchedChunkDirs.add(`${opts.store.chunks}/${hex(r.digest).slice(0, 2)}`);
        }
      }
    });
    p.catch(() => {}); // surfaced when awaited below
    inflight.push(p);
  };

  // Not zeroed here: the Worker zeroes whatever the stream did not cover (`uncovered`).
  const newBuffer = () => free.pop() ?? alignedBuffer(BLOCK_SIZE);

  /** Blocks before `upto` that the stream did not touch. */
  const passUntouched = async (upto: number) => {
    for (; next < upto; next++) {
      const length = index!.blockLength(next);
      if (opts.mode === "diff" && next < (parent?.count ?? 0) && parentLength(next) === length) {
        // Unchanged since the parent: nothing to read or write.
        index!.set(next, parentDigest(next));
        if (index!.isZero(next)) stats.zero++;
        else stats.unchanged++;
      } else if (opts.mode === "diff" && next >= (parent?.count ?? 0)) {
        index!.set(next, null); // grown image: new space reads as zeros
        stats.zero++;
      } else {
        // Full stream (untouched = unallocated = zeros, maybe replacing parent data in a
        // cow clone), or the parent's shorter/longer last block after a resize.
        await dispatch(next, newBuffer(), []);
      }
    }
  };

  const flush = async () => {
    if (!cur) return;
    await passUntouched(cur.index);
    await dispatch(cur.index, cur.buf, cur.covered);
    next = cur.index + 1;
    cur = undefined;
  };

  const blockFor = async (i: number): Promise<Current> => {
    if (cur && cur.index === i) return cur;
    if (i < next || (cur && i < cur.index)) {
      throw new BackyError(`diff stream is not ordered by offset (block ${i} after ${next - 1})`);
    }
    await flush();
    cur = { index: i, buf: newBuffer(), covered: [] };
    return cur;
  };

  const setSize = async (s: number) => {
    size = s;
    index = BlockIndex.empty(s);
    await opts.onSize(s);
  };

  for await (const rec of records) {
    if (rec.type === "from") {
      if (opts.fromSnap !== rec.name) {
        throw new BackyError(
          `diff stream starts at snapshot '${rec.name}', expected '${opts.fromSnap ?? "none"}'`,
        );
      }
    } else if (rec.type === "to") {
      if (rec.name !== opts.toSnap) {
        throw new BackyError(
          `diff stream ends at snapshot '${rec.name}', expected '${opts.toSnap}'`,
        );
      }
    } else if (rec.type === "size") {
      if (size !== undefined) throw new BackyError("diff stream has two size records");
      await setSize(rec.size);
    } else if (rec.type === "data" || rec.type === "zero") {
      if (size === undefined) throw new BackyError("diff stream has data before its size record");
      const length = rec.type === "data" ? rec.data.length : rec.length;
      if (rec.offset + length > size) {
        throw new BackyError(
          `diff record at ${rec.offset}+${length} is beyond the image size ${size}`,
        );
      }
      stats.received += length;
      let pos = rec.offset;
      const end = rec.offset + length;
      while (pos < end) {
        const i = Math.floor(pos / BLOCK_SIZE);
        const at = pos - i * BLOCK_SIZE;
        const n = Math.min(end - pos, BLOCK_SIZE - at);
        const b = await blockFor(i);
        if (rec.type === "data") {
          b.buf.set(rec.data.subarray(pos - rec.offset, pos - rec.offset + n), at);
        } else b.buf.fill(0, at, at + n);
        b.covered.push([at, n]);
        pos += n;
      }
    } else if (rec.type === "end") {
      ended = true;
      break;
    }
  }
  if (!ended) throw new BackyError("diff stream ended without an end record");
  if (size === undefined) throw new BackyError("diff stream has no size record");
  await flush();
  await passUntouched(blockCount(size));
  await Promise.all(inflight);
  return { size, index: index!, ...stats };
}

/** The parts of [0, length) not covered by `covered` (ranges may overlap, any order). */
export function gaps(covered: [number, number][], length: number): [number, number][] {
  const sorted = [...covered].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  let pos = 0;
  for (const [at, n] of sorted) {
    if (at > pos) out.push([pos, at - pos]);
    pos = Math.max(pos, at + n);
  }
  if (pos < length) out.push([pos, length - pos]);
  return out;
}
