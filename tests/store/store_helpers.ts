/**
 * Helpers shared by the store conformance suites (tests/store, tests/s3): revisions
 * written and read back through the store and the real data-path Workers.
 */
import { BLOCK_SIZE, BlockIndex } from "../../src/repo/index_file.ts";
import type { JobDir } from "../../src/repo/jobdir.ts";
import type { Backend, Revision } from "../../src/repo/revision.ts";
import type { Store } from "../../src/store/store.ts";
import type { WorkerPool } from "../../src/backup/pool.ts";
import type { StoreResult } from "../../src/backup/protocol.ts";
import { alignedBuffer } from "../../src/util/native/buffer.ts";
import { randomBytes } from "../helpers.ts";

/** Block contents: a seed for random data, 0 for zeros. */
export type Blocks = number[];
export const SIZE = 3 * BLOCK_SIZE + 12345; // a short last block

export function content(seed: number, length: number): Uint8Array {
  return seed ? randomBytes(length, seed) : new Uint8Array(length);
}

export function revision(id: string, backend: Backend, parent?: Revision): Revision {
  return {
    id,
    timestampUs: Date.now() * 1000,
    parent: parent?.id ?? null,
    stats: { bytes_written: 0 },
    tags: ["daily"],
    backend,
    trust: "trusted",
    extra: {},
  };
}

/** Writes a complete revision through the store and the Workers; returns the block kinds. */
export async function writeRevision(
  job: JobDir,
  store: Store,
  pool: WorkerPool,
  rev: Revision,
  blocks: Blocks,
  parent?: { rev: Revision; index: BlockIndex },
): Promise<{ index: BlockIndex; kinds: StoreResult["kind"][] }> {
  const writer = await store.begin(rev, parent?.rev, parent?.index);
  await writer.setSize(SIZE);
  const index = BlockIndex.empty(SIZE);
  const kinds: StoreResult["kind"][] = [];
  for (let i = 0; i < index.count; i++) {
    const length = index.blockLength(i);
    const data = alignedBuffer(BLOCK_SIZE);
    data.set(content(blocks[i], length));
    const pi = parent?.index;
    const r = await pool.store({
      offset: i * BLOCK_SIZE,
      length,
      store: writer.ref,
      content: { from: "data", data, uncovered: [], base: "zero" },
      parentDigest: pi && !pi.isZero(i) ? pi.digest(i).slice() : null,
      parentLength: pi ? pi.blockLength(i) : 0,
    });
    writer.stored(r.kind, r.digest, r.stored);
    index.set(i, r.digest);
    kinds.push(r.kind);
  }
  await pool.closeFiles();
  await writer.commit(index);
  await writer.seal();
  rev.stats.duration = 0.1;
  await job.writeRevision(rev, 0o440);
  await store.publish?.(rev);
  return { index, kinds };
}

/** Every block read back through store.open and the Workers. */
export async function readAll(store: Store, pool: WorkerPool, rev: Revision): Promise<Uint8Array> {
  const data = await store.open(rev);
  const out = new Uint8Array(data.size);
  for (let i = 0; i * BLOCK_SIZE < data.size; i++) {
    const length = Math.min(BLOCK_SIZE, data.size - i * BLOCK_SIZE);
    const digest = data.index!.isZero(i) ? null : data.index!.digest(i).slice();
    const r = await pool.read({ offset: i * BLOCK_SIZE, length, store: data.ref, digest });
    if (r.data) out.set(r.data, i * BLOCK_SIZE);
  }
  await pool.closeFiles();
  return out;
}

export function expected(blocks: Blocks): Uint8Array {
  const out = new Uint8Array(SIZE);
  for (let i = 0; i * BLOCK_SIZE < SIZE; i++) {
    const length = Math.min(BLOCK_SIZE, SIZE - i * BLOCK_SIZE);
    out.set(content(blocks[i], length), i * BLOCK_SIZE);
  }
  return out;
}
