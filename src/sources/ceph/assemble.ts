/**
 * Turns a stream of changes (the records of an rbd diff, ordered by offset) into the block
 * events of a new revision (sources/source.ts): 4 MiB blocks assembled in buffers, with the
 * ranges the stream did not cover named, so a Worker can fill them from the parent or with
 * zeros (design D4, D5). Pure: no I/O; holds one block at a time, and the consumer bounds
 * how many it keeps (buffers come back through `buffers.give`).
 */
import { BackyError } from "../../util/errors.ts";
import { alignedBuffer } from "../../util/native/buffer.ts";
import { BLOCK_SIZE, blockCount } from "../../repo/index_file.ts";
import type { SourceEvent } from "../source.ts";
import type { DiffRecord } from "./diff.ts";

/** Block buffers for reuse: the consumer gives back what it is done with. */
export class BlockBuffers {
  #free: Uint8Array[] = [];
  /** A free buffer (contents undefined) or a new one. */
  take(): Uint8Array {
    return this.#free.pop() ?? alignedBuffer(BLOCK_SIZE);
  }
  give(buffer: Uint8Array): void {
    this.#free.push(buffer);
  }
}

export interface AssembleOptions {
  /** "diff": untouched blocks keep the parent's content; "full": the stream is everything. */
  mode: "diff" | "full";
  /** The parent's shape: its block count and each block's length (after a resize). */
  parent?: { count: number; blockLength(i: number): number };
  /** Expected snapshot names (checked against the stream's `f`/`t` records). */
  fromSnap?: string;
  toSnap: string;
  buffers: BlockBuffers;
  /** Counts the bytes the stream carried (data and zero records). */
  received?: (bytes: number) => void;
}

interface Current {
  block: number;
  buf: Uint8Array;
  covered: [number, number][];
}

/** The size event, then every block of the image exactly once, in order. */
export async function* assembleBlocks(
  records: AsyncIterable<DiffRecord>,
  opts: AssembleOptions,
): AsyncGenerator<SourceEvent> {
  let size: number | undefined;
  let next = 0; // first block not handed out yet
  let cur: Current | undefined;
  let ended = false;
  const parentCount = opts.parent?.count ?? 0;
  const blockLength = (i: number) => Math.min(BLOCK_SIZE, size! - i * BLOCK_SIZE);
  const base = opts.mode === "diff" ? "parent" as const : "zero" as const;

  const data = (block: number, buf: Uint8Array, covered: [number, number][]): SourceEvent => ({
    kind: "data",
    block,
    data: buf,
    uncovered: gaps(covered, blockLength(block)),
    base,
  });

  /** Blocks before `upto` that the stream did not touch. */
  function* untouched(upto: number): Generator<SourceEvent> {
    for (; next < upto; next++) {
      if (opts.mode === "diff" && next < parentCount) {
        // Unchanged since the parent: nothing to read or write, unless a resize changed
        // the length of the parent's last block.
        if (opts.parent!.blockLength(next) === blockLength(next)) {
          yield { kind: "unchanged", block: next };
        } else yield data(next, opts.buffers.take(), []);
      } else if (opts.mode === "diff") {
        yield { kind: "zero", block: next }; // grown image: new space reads as zeros
      } else {
        // Full stream: untouched = unallocated = zeros (maybe replacing parent data).
        yield data(next, opts.buffers.take(), []);
      }
    }
  }

  function* flush(): Generator<SourceEvent> {
    if (!cur) return;
    yield* untouched(cur.block);
    yield data(cur.block, cur.buf, cur.covered);
    next = cur.block + 1;
    cur = undefined;
  }

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
      size = rec.size;
      yield { kind: "size", size };
    } else if (rec.type === "data" || rec.type === "zero") {
      if (size === undefined) throw new BackyError("diff stream has data before its size record");
      const length = rec.type === "data" ? rec.data.length : rec.length;
      if (rec.offset + length > size) {
        throw new BackyError(
          `diff record at ${rec.offset}+${length} is beyond the image size ${size}`,
        );
      }
      opts.received?.(length);
      let pos = rec.offset;
      const end = rec.offset + length;
      while (pos < end) {
        const i = Math.floor(pos / BLOCK_SIZE);
        const at = pos - i * BLOCK_SIZE;
        const n = Math.min(end - pos, BLOCK_SIZE - at);
        if (!cur || cur.block !== i) {
          if (i < next || (cur && i < cur.block)) {
            throw new BackyError(
              `diff stream is not ordered by offset (block ${i} after ${next - 1})`,
            );
          }
          yield* flush();
          cur = { block: i, buf: opts.buffers.take(), covered: [] };
        }
        if (rec.type === "data") {
          cur.buf.set(rec.data.subarray(pos - rec.offset, pos - rec.offset + n), at);
        } else cur.buf.fill(0, at, at + n);
        cur.covered.push([at, n]);
        pos += n;
      }
    } else if (rec.type === "end") {
      ended = true;
      break;
    }
  }
  if (!ended) throw new BackyError("diff stream ended without an end record");
  if (size === undefined) throw new BackyError("diff stream has no size record");
  yield* flush();
  yield* untouched(blockCount(size));
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
