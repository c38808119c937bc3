/**
 * Garbage collection of the shared bucket without a database (docs/s3.md), in steps that
 * any host may run (each under the `gc/lease`) and that never wait:
 *  1. mark: every `.index` of every job; condemn chunks no index references and older
 *     than the grace period; publish the list (`gc/state` = condemned), then record the
 *     job leases live at that moment;
 *  2. once each of those leases has ended, say "deleting", then list the keep markers that
 *     writers left for condemned chunks they reuse, mark again, and delete the rest.
 * A writer that began before the list was out has finished by step 2 (its index is marked
 * then); one that began after it read the list and protects what it reuses (s3_blocks.ts).
 * Anything unreadable stops the collection before anything is deleted.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { BlockIndex } from "../repo/index_file.ts";
import type { S3Client } from "./s3_client.ts";
import {
  chunkOfKey,
  condemnedKey,
  decodeDigests,
  encodeDigests,
  GC_LAST,
  GC_LEASE,
  GC_STATE,
  type GcState,
  isLive,
  JOBS,
  keepPrefix,
  leaseKey,
  LEASES,
  parseGcState,
  parseLease,
} from "./s3_layout.ts";
import { LeaseHolder } from "./s3_lease.ts";

const log = logger("s3-gc");

export interface GcOptions {
  host: string;
  leaseTtl: number;
  /** Seconds a chunk must be old before it may be condemned. */
  grace: number;
  /** Seconds between collections. */
  interval: number;
  /** A lease of the caller's own (expire) that writes no chunks: not waited for. */
  ownLease?: string;
}

/** What one step did. */
export interface GcStep {
  step: "not-due" | "busy" | "nothing" | "condemned" | "waiting" | "swept";
  kept: number;
  removed: number;
  condemned: number;
  /** Leases the sweep still waits for. */
  waiting: number;
}

/** What marking found: `has(hex digest)`. */
export interface Referenced {
  has(digestHex: string): boolean;
}

/**
 * Referenced digests as sorted 64-bit prefixes: 8 bytes per chunk instead of a ~100-byte
 * string (380 M chunks: 3 GB, not 40 GB). Two digests sharing a prefix only keep a chunk
 * that could have gone, never the other way round.
 */
export class PrefixSet implements Referenced {
  private buf = new BigUint64Array(4096);
  private n = 0;
  private sorted = true;

  add(digest: Uint8Array): void {
    if (this.n === this.buf.length) {
      const bigger = new BigUint64Array(this.buf.length * 2);
      bigger.set(this.buf);
      this.buf = bigger;
    }
    this.buf[this.n++] = new DataView(digest.buffer, digest.byteOffset, 8).getBigUint64(0);
    this.sorted = false;
  }

  get size(): number {
    this.sort();
    return this.n;
  }

  has(digestHex: string): boolean {
    this.sort();
    const key = BigInt(`0x${digestHex.slice(0, 16)}`);
    let lo = 0, hi = this.n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = this.buf[mid];
      if (v === key) return true;
      if (v < key) lo = mid + 1;
      else hi = mid - 1;
    }
    return false;
  }

  private sort(): void {
    if (this.sorted) return;
    const view = this.buf.subarray(0, this.n).sort();
    let w = 0;
    for (let r = 0; r < view.length; r++) {
      if (r === 0 || view[r] !== view[w - 1]) view[w++] = view[r];
    }
    this.n = w;
    this.sorted = true;
  }
}

/** Chunks no index references and not modified since `cutoff` (server ms): pure. */
export function condemn(
  chunks: Iterable<{ digest: string; lastModified: number }>,
  referenced: Referenced,
  cutoff: number,
): { condemned: string[]; kept: number } {
  const condemned: string[] = [];
  let kept = 0;
  for (const c of chunks) {
    if (referenced.has(c.digest) || !(c.lastModified < cutoff)) kept++;
    else condemned.push(c.digest);
  }
  return { condemned, kept };
}

/** What the sweep deletes: condemned, not kept by a writer, not referenced now: pure. */
export function sweepable(
  condemned: Set<string>,
  keep: Set<string>,
  referenced: Referenced,
): string[] {
  return [...condemned].filter((d) => !keep.has(d) && !referenced.has(d));
}

/** Every chunk digest any job's index references; any unreadable index throws. */
export async function markAll(client: S3Client): Promise<PrefixSet> {
  const referenced = new PrefixSet();
  for await (const obj of client.list(JOBS)) {
    if (!obj.key.endsWith(".index")) continue;
    const bytes = await client.get(obj.key);
    if (!bytes) continue; // removed since the listing: its revision is gone
    let index: BlockIndex;
    try {
      index = BlockIndex.decode(bytes, obj.key);
    } catch (e) {
      throw new BackyError(`not collecting garbage: ${errorMessage(e)}`);
    }
    for (let i = 0; i < index.count; i++) {
      if (!index.isZero(i)) referenced.add(index.digest(i));
    }
  }
  return referenced;
}

/** Runs the next step of the bucket's collection, if any is due. */
export async function gcStep(client: S3Client, opts: GcOptions): Promise<GcStep> {
  const out: GcStep = { step: "nothing", kept: 0, removed: 0, condemned: 0, waiting: 0 };
  let lease: LeaseHolder;
  try {
    lease = await LeaseHolder.acquire(
      client,
      GC_LEASE,
      "garbage collection",
      "gc",
      opts.host,
      opts.leaseTtl,
    );
  } catch (e) {
    if (!(e instanceof BackyError) || !/ is held by /.test(e.message)) throw e;
    return { ...out, step: "busy" };
  }
  try {
    const raw = await client.get(GC_STATE);
    let state: GcState | undefined;
    try {
      state = raw ? parseGcState(raw) : undefined;
    } catch (e) {
      throw new BackyError(`not collecting garbage: ${errorMessage(e)}`);
    }
    if (!state) return await mark(client, opts, lease, out);
    out.condemned = state.condemned;
    if (state.phase === "condemned") {
      const waiting = await stillRunning(client, state, opts);
      if (waiting > 0) return { ...out, step: "waiting", waiting };
      state.phase = "deleting";
      await putJson(client, GC_STATE, state);
    }
    return await sweep(client, state, lease, out);
  } finally {
    await lease.release();
  }
}

async function mark(
  client: S3Client,
  opts: GcOptions,
  lease: LeaseHolder,
  out: GcStep,
): Promise<GcStep> {
  const last = await client.get(GC_LAST);
  const started = client.serverNow();
  if (last) {
    const finished = Number(JSON.parse(new TextDecoder().decode(last)).finished);
    if (started - finished < opts.interval * 1000) return { ...out, step: "not-due" };
  }
  const referenced = await markAll(client);
  const chunks: { digest: string; lastModified: number }[] = [];
  for await (const obj of client.list("chunks/")) {
    const digest = chunkOfKey(obj.key);
    if (digest) chunks.push({ digest, lastModified: obj.lastModified });
  }
  const { condemned, kept } = condemn(chunks, referenced, started - opts.grace * 1000);
  out.kept = kept;
  lease.assertValid("garbage collection");
  if (condemned.length === 0) {
    await putJson(client, GC_LAST, { finished: client.serverNow(), removed: 0, kept });
    log.info("Nothing to collect", { chunks: chunks.length });
    return out;
  }
  const id = crypto.randomUUID();
  await client.put(condemnedKey(id), encodeDigests(condemned));
  // Published first, leases listed after: a writer that wrote its lease after our listing
  // reads this state when it begins (its lease first, then the state), so it sees the list.
  const state: GcState = {
    id,
    phase: "condemned",
    created: client.serverNow(),
    waitFor: [],
    condemned: condemned.length,
    host: opts.host,
  };
  (state as unknown as { waitFor: null }).waitFor = null;
  await putJson(client, GC_STATE, state);
  state.waitFor = await liveLeases(client, opts);
  await putJson(client, GC_STATE, state);
  log.info("Chunks condemned", {
    condemned: condemned.length,
    kept,
    waiting: state.waitFor.length,
  });
  return { ...out, step: "condemned", condemned: condemned.length, waiting: state.waitFor.length };
}

/** Job leases live now (but the caller's own), by job and lease id. */
async function liveLeases(client: S3Client, opts: GcOptions) {
  const out: { job: string; lease: string }[] = [];
  for await (const obj of client.list(LEASES)) {
    const bytes = await client.get(obj.key);
    if (!bytes) continue;
    const lease = parseLease(bytes);
    if (lease.id === opts.ownLease || !isLive(lease, client.serverNow())) continue;
    out.push({ job: obj.key.slice(LEASES.length), lease: lease.id });
  }
  return out;
}

/** How many of the leases the state waits for are still held. */
async function stillRunning(client: S3Client, state: GcState, opts: GcOptions): Promise<number> {
  if (state.waitFor === null) {
    // A collector died between publishing and recording: record the leases live now.
    state.waitFor = await liveLeases(client, opts);
    await putJson(client, GC_STATE, state);
    return state.waitFor.length;
  }
  let n = 0;
  for (const w of state.waitFor) {
    const bytes = await client.get(leaseKey(w.job));
    if (!bytes) continue;
    const lease = parseLease(bytes);
    if (lease.id === w.lease && isLive(lease, client.serverNow())) n++;
  }
  return n;
}

async function sweep(
  client: S3Client,
  state: GcState,
  lease: LeaseHolder,
  out: GcStep,
): Promise<GcStep> {
  const keep = new Set<string>();
  const keepKeys: string[] = [];
  for await (const obj of client.list(keepPrefix(state.id))) {
    keep.add(obj.key.slice(keepPrefix(state.id).length));
    keepKeys.push(obj.key);
  }
  const referenced = await markAll(client);
  const list = await client.get(condemnedKey(state.id));
  if (!list) throw new BackyError(`not collecting garbage: ${condemnedKey(state.id)} is missing`);
  const doomed = sweepable(decodeDigests(list), keep, referenced);
  for (let i = 0; i < doomed.length; i += 1000) {
    lease.assertValid("garbage collection");
    await client.deleteMany(
      doomed.slice(i, i + 1000).map((d) => `chunks/${d.slice(0, 2)}/${d}`),
    );
    out.removed += Math.min(1000, doomed.length - i);
  }
  out.kept = state.condemned - out.removed;
  for (let i = 0; i < keepKeys.length; i += 1000) {
    await client.deleteMany(keepKeys.slice(i, i + 1000));
  }
  await client.delete(condemnedKey(state.id));
  await client.delete(GC_STATE);
  await putJson(client, GC_LAST, {
    finished: client.serverNow(),
    removed: out.removed,
    kept: out.kept,
  });
  log.info("Chunks collected", { removed: out.removed, spared: out.kept });
  return { ...out, step: "swept" };
}

async function putJson(client: S3Client, key: string, value: unknown): Promise<void> {
  await client.put(key, new TextEncoder().encode(JSON.stringify(value)), {
    contentType: "application/json",
  });
}
