/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Data-path Worker: positional reads into page-aligned buffers, zero detection, SHA-256,
 * and puts/gets through the store's block face (store/block_store.ts), so the coordinating
 * thread never touches block data. Requests are served from a typed table (protocol.ts).
 */
import * as fs from "node:fs";
import { isZero, sha256 } from "../util/bytes.ts";
import { PositionalWriter, preadFull } from "../util/directio.ts";
import { released } from "../util/gc.ts";
import { alignedBuffer, scratchBuffer } from "../util/native/buffer.ts";
import { readAhead } from "../util/native/readahead.ts";
import { BLOCK_SIZE, sameDigest } from "../repo/index_file.ts";
import type { BlockStore, StoreRef } from "../store/block_store.ts";
import { openBlocks } from "../store/blocks.ts";
import { GET_BUFFER_SIZE } from "../store/in_place.ts";
import type {
  CheckRequest,
  CheckResult,
  Op,
  Ops,
  ReadRequest,
  ReadResult,
  StoreRequest,
  StoreResult,
  WorkerMessage,
  WorkerReply,
} from "./protocol.ts";

/** The parent's block, for legacy cow parents without an index (source blocks: scratch). */
const buf2 = alignedBuffer(BLOCK_SIZE);
// Aligned, so that zero blocks written to a device can go out with O_DIRECT as they are.
const zeros = alignedBuffer(BLOCK_SIZE);
/**
 * Which block after its own a Worker asks the kernel to read (A/B, cold 4 GiB incremental,
 * 3 rounds: 0.82x the time with the 4th block hinted, warm unchanged).
 */
const READ_AHEAD_BLOCKS = 4;

/** Descriptors and block faces, kept until the coordinator asks to close them. */
const readFds = new Map<string, number>();
const stores = new Map<string, Promise<BlockStore>>();
const targets = new Map<string, PositionalWriter>();

function readFd(path: string): number {
  let f = readFds.get(path);
  if (f === undefined) readFds.set(path, f = fs.openSync(path, "r"));
  return f;
}

function blocks(ref: StoreRef): Promise<BlockStore> {
  const key = JSON.stringify(ref);
  let b = stores.get(key);
  if (!b) stores.set(key, b = openBlocks(ref));
  return b;
}

function target(path: string): PositionalWriter {
  let t = targets.get(path);
  if (!t) targets.set(path, t = new PositionalWriter(path));
  return t;
}

/** The block's content: read from the source file, or the bytes sent with gaps filled. */
async function content(m: StoreRequest, store: BlockStore): Promise<Uint8Array> {
  const c = m.content;
  if (c.from === "file") {
    const fd = readFd(c.path);
    // The next blocks go to either Worker: have the kernel read one of them meanwhile. Each
    // block is hinted once; hinting the whole window each time cost 2x the system time.
    readAhead(fd, m.offset + READ_AHEAD_BLOCKS * BLOCK_SIZE, BLOCK_SIZE);
    // The thread's scratch (shared with chunk decoding, never used while this block is).
    return preadFull(fd, scratchBuffer(BLOCK_SIZE), m.length, m.offset);
  }
  if (c.from === "zero") return zeros.subarray(0, m.length);
  let data = c.data.subarray(0, m.length);
  const whole = c.uncovered.length === 1 && c.uncovered[0][0] === 0 &&
    c.uncovered[0][1] >= m.length;
  if (whole && (c.base === "zero" || !m.parentDigest)) {
    data = zeros.subarray(0, m.length); // nothing arrived for this block: it reads as zeros
  } else if (c.uncovered.length) {
    // The buffer holds only what the stream covered; the rest is the parent's or zeros.
    for (const [at, len] of c.uncovered) data.fill(0, at, at + len);
    if (c.base === "parent" && m.parentDigest) {
      const old = await store.parentBytes(m.offset, m.length, m.parentDigest, m.parentLength);
      for (const [at, len] of c.uncovered) {
        const end = Math.min(at + len, old.length);
        if (end > at) data.set(old.subarray(at, end), at);
      }
    }
  }
  return data;
}

/** Stores one block whose content is known: hole, unchanged, or written (design D4). */
async function storeBlock(m: StoreRequest): Promise<StoreResult> {
  const store = await blocks(m.store);
  const data = await content(m, store);
  let parent = m.parentDigest;
  if (parent === undefined && m.parentImage) {
    const old = preadFull(readFd(m.parentImage), buf2, m.length, m.offset);
    parent = isZero(old) ? null : sha256(old);
  }
  const buffer = m.content.from === "data" ? m.content.data : undefined;
  if (isZero(data)) {
    await store.zero(m.offset, m.length, parent !== null || !!m.rewrite);
    return { kind: "zero", digest: null, stored: 0, buffer };
  }
  const digest = sha256(data);
  if (
    !m.rewrite && parent && sameDigest(parent, digest) &&
    await store.hasParentBlock(m.offset, digest)
  ) {
    return { kind: "same", digest, stored: 0, buffer };
  }
  const stored = await store.write(m.offset, data, digest);
  return { kind: stored ? "written" : "dedup", digest, stored, buffer };
}

async function check(m: CheckRequest): Promise<CheckResult> {
  return await (await blocks(m.store)).check(m.offset, m.length, m.digest);
}

/** A result that is ready later: the Worker serves the next request meanwhile. */
class Later<T> {
  constructor(readonly result: Promise<T>) {}
}

/**
 * Restores decode into two buffers in turn: while one block's write runs on the blocking
 * pool, the next is read, decoded and hashed into the other (one Worker on its own waited
 * for every write; A/B in docs/benchmarks.md). The first is the thread's scratch buffer
 * (so serve() lets these writes finish before any other kind of request), the second is
 * allocated on first use, so that backups, which never write this way, do not pay for it.
 */
const slots: Uint8Array[] = [];
const slotBuffer = (s: number) =>
  s === 0 ? scratchBuffer(GET_BUFFER_SIZE) : (slots[s] ??= alignedBuffer(GET_BUFFER_SIZE));
const slotWrites: Promise<unknown>[] = [];
let nextSlot = 0;
/** Writes still running; serve() waits for them before any other request (close too). */
const writes = new Set<Promise<unknown>>();

function track<T>(p: Promise<T>): Promise<T> {
  writes.add(p);
  const done = () => writes.delete(p);
  p.then(done, done);
  return p;
}

async function readToTarget(
  m: ReadRequest,
  out: NonNullable<ReadRequest["out"]>,
): Promise<ReadResult | Later<ReadResult>> {
  if (m.digest === null) {
    if (!out.writeZeros) return { zero: true };
    const w = track(target(out.path).writeAsync(zeros.subarray(0, m.length), m.offset));
    return new Later(w.then(() => ({ zero: true })));
  }
  const s = nextSlot;
  nextSlot = (nextSlot + 1) % 2;
  await slotWrites[s]; // its previous block has gone out (or failed, reported by its request)
  const data = await (await blocks(m.store)).get(m.offset, m.length, m.digest, slotBuffer(s));
  const zero = m.digest === undefined ? isZero(data) : false;
  if (zero && !out.writeZeros) return { zero };
  const w = track(target(out.path).writeAsync(data, m.offset));
  slotWrites[s] = w.catch(() => {});
  return new Later(w.then(() => ({ zero })));
}

async function read(m: ReadRequest): Promise<ReadResult | Later<ReadResult>> {
  if (m.out) return await readToTarget(m, m.out);
  let data: Uint8Array;
  let zero: boolean;
  if (m.digest === null) {
    data = zeros.subarray(0, m.length);
    zero = true;
  } else {
    data = await (await blocks(m.store)).get(m.offset, m.length, m.digest, m.into);
    zero = m.digest === undefined ? isZero(data) : false;
  }
  if (zero) return { zero };
  if (m.into && m.into.length >= data.length) {
    if (data.buffer !== m.into.buffer) m.into.set(data);
    return { data: m.into.subarray(0, data.length), zero };
  }
  released(data.length);
  return { data: data.slice(), zero };
}

async function close(): Promise<null> {
  for (const f of readFds.values()) fs.closeSync(f);
  for (const s of stores.values()) await (await s).close();
  for (const t of targets.values()) t.close();
  readFds.clear();
  stores.clear();
  targets.clear();
  return null;
}

type Answer<T> = T | Later<T> | Promise<T | Later<T>>;
const handlers: { [K in Op]: (req: Ops[K][0]) => Answer<Ops[K][1]> } = {
  store: storeBlock,
  check,
  read,
  close,
};

/** Block buffers in a result go back by transfer, not as 4 MiB structured-clone copies. */
function transferables(result: unknown): Transferable[] {
  const r = result as { data?: Uint8Array; buffer?: Uint8Array } | null;
  const out: Transferable[] = [];
  if (r?.data) out.push(r.data.buffer as ArrayBuffer);
  if (r?.buffer) out.push(r.buffer.buffer as ArrayBuffer);
  return out;
}

/** Tells the pool this Worker serves requests (a Worker that never does is an error there). */
self.postMessage({ ready: true });

/**
 * One request at a time, in arrival order: the block buffers above are shared, and a store
 * that answers with promises (remote) would otherwise interleave requests on them.
 */
let queue: Promise<void> = Promise.resolve();

self.onmessage = (ev: MessageEvent<WorkerMessage>) => {
  queue = queue.then(() => serve(ev.data));
};

async function serve({ id, op, req }: WorkerMessage): Promise<void> {
  try {
    const handler = handlers[op] as ((r: unknown) => unknown) | undefined;
    if (!handler) throw new Error(`unknown data-path request '${op}'`);
    // Restore writes may still be reading the scratch buffer that other requests use.
    if (op !== "read" || !(req as ReadRequest).out) await Promise.allSettled(writes);
    const result = await handler(req);
    if (result instanceof Later) {
      // Answered when its write is done; the next request starts now.
      result.result.then((r) => answer(id, r), (e) => fail(id, e));
      return;
    }
    answer(id, result);
  } catch (e) {
    fail(id, e);
  }
}

function answer(id: number, result: unknown): void {
  self.postMessage({ id, result } satisfies WorkerReply, { transfer: transferables(result) });
}

function fail(id: number, e: unknown): void {
  const err = e as Error & { code?: string };
  self.postMessage(
    { id, error: err.message ?? String(e), code: err.code, name: err.name } satisfies WorkerReply,
  );
}
