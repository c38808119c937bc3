/**
 * `backy backup TAGS` (spec 3.1, design D2-D5, D11, D17): lock, clean incomplete revisions,
 * create the revision, store the source's blocks (only what changed), verify, and only then
 * make it count. One writer for every source and store: the Source yields blocks, the Store
 * keeps them, this module does the accounting, commit, verification and abort.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { type Progress, startProgress } from "../util/progress.ts";
import { newRevisionId } from "../repo/id.ts";
import { BLOCK_SIZE, BlockIndex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete, newestGood, type Revision } from "../repo/revision.ts";
import { parentCandidates, type RevisionWriter, type Store, storeFor } from "../store/store.ts";
import { sourceFor } from "../sources/registry.ts";
import type { Source, SourceRun } from "../sources/source.ts";
import type { StoreRequest } from "./protocol.ts";
import { WorkerPool } from "./pool.ts";
import {
  checkBlocks,
  damagedBlocks,
  describe,
  VerificationError,
  verificationFailed,
  verifySample,
} from "./verify.ts";

export { VerificationError } from "./verify.ts";

const log = logger("backup");

export interface BackupOutcome {
  revision: Revision;
}

/** Deletes incomplete revisions left by crashes or failures (exact files, under the lock). */
export async function removeIncomplete(job: JobDir, revisions: Revision[]): Promise<Revision[]> {
  const kept: Revision[] = [];
  for (const rev of revisions) {
    if (isComplete(rev)) {
      kept.push(rev);
      continue;
    }
    log.info("Removing incomplete revision", { id: rev.id, error: rev.error });
    await storeFor(job, rev.backend).removeRevision(rev.id);
  }
  return kept;
}

/** Marks a revision damaged: never a parent again, flagged by status and check. */
export async function markDistrusted(job: JobDir, rev: Revision, damage: string[]) {
  rev.trust = "distrusted";
  rev.damage = [...new Set([...(rev.damage ?? []), ...damage])].slice(0, 20);
  await job.writeRevision(rev, isComplete(rev) ? 0o440 : 0o640);
  await storeFor(job, rev.backend).publish?.(rev);
}

export async function backup(job: JobDir, tags: string[]): Promise<BackupOutcome> {
  const store = storeFor(job);
  const source = sourceFor(job.path, job.config.settings);
  const lock = await job.lockBackup();
  const readLock = await job.lockRead();
  // A remote store (s3) holds the job for this run and syncs its revisions first.
  const claim = await store.claim?.("backup").catch((e) => {
    readLock.release();
    lock.release();
    throw e;
  });
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.warning(p);
    const revisions = await removeIncomplete(job, scan.revisions);
    const prepared = await source.prepare(parentCandidates(revisions, store));
    const { info } = prepared;
    let parent = prepared.parent;
    let parentIndex: BlockIndex | undefined;
    try {
      parentIndex = parent ? await job.readIndex(parent.id) : undefined;
    } catch (e) {
      // Never build on a parent whose content is unknown; never stop the job over it.
      log.warning("The parent's index is damaged in both copies: making a full backup", {
        parent: parent!.id,
        error: errorMessage(e),
      });
      await markDistrusted(job, parent!, [`index unreadable: ${errorMessage(e)}`]);
      parent = undefined;
    }
    const start = Date.now();
    const rev: Revision = {
      id: newRevisionId(),
      timestampUs: start * 1000,
      parent: parent?.id ?? null,
      stats: { bytes_written: 0 },
      tags: [...new Set(tags)].sort(),
      backend: store.backend,
      trust: "trusted",
      extra: {},
    };
    log.info("Creating revision", {
      id: rev.id,
      tags: rev.tags.join(","),
      parent: rev.parent ?? "-",
      backend: store.backend,
      ...info,
    });
    await job.writeRevision(rev, 0o640);
    try {
      await writeData(job, store, source, rev, parent, parentIndex);
    } catch (e) {
      rev.error = errorMessage(e);
      if (e instanceof VerificationError) rev.trust = "distrusted";
      await job.writeRevision(rev, 0o640).catch(() => {});
      log.error("Backup failed", { id: rev.id, error: rev.error });
      await source.finish(newestGood(revisions)).catch((f) =>
        log.warning("Cleanup after failure failed", { error: errorMessage(f) })
      );
      throw e;
    }
    rev.stats.duration = Math.round((Date.now() - start) / 100) / 10;
    await job.writeRevision(rev, 0o440);
    await store.publish?.(rev);
    await job.setLast(rev.id, store.imageName(rev.id));
    log.info("Backup complete", {
      id: rev.id,
      bytes_written: rev.stats.bytes_written,
      duration: rev.stats.duration,
    });
    await source.finish(rev);
    return { revision: rev };
  } finally {
    await claim?.release();
    readLock.release();
    lock.release();
  }
}

/**
 * Stores the revision's blocks, commits and verifies them. A failed copy frees what it
 * created (the disk may be full); a failed verification keeps the data as evidence and
 * throws VerificationError.
 */
async function writeData(
  job: JobDir,
  store: Store,
  source: Source,
  rev: Revision,
  parent: Revision | undefined,
  parentIndex: BlockIndex | undefined,
): Promise<void> {
  // Workers first: starting them (a few ms of CPU each) overlaps the source's start.
  const pool = new WorkerPool(source.workersPerCore * WorkerPool.defaultSize());
  const progress = startProgress({
    command: "backup",
    phase: "copying",
    total: 0,
    jobDir: job.path,
  });
  let run: SourceRun | undefined;
  try {
    run = await source.start(rev, parent, parentIndex);
    const writer = await store.begin(rev, parent, parentIndex);
    let copied: Copied;
    try {
      copied = await copyBlocks(run, writer, parentIndex, pool, progress);
      await pool.closeFiles();
      await writer.commit(copied.index);
    } catch (e) {
      await writer.abort();
      throw e;
    }
    const { index, changed, unchanged, zero, written } = copied;
    Object.assign(rev.stats, {
      bytes_written: written,
      blocks: { changed, unchanged, zero },
      ...writer.stats(),
      ...run.stats(),
    });
    log.info(run.sample ? "Data copied, verifying a sample" : "Data copied, verifying", {
      id: rev.id,
      changed,
      unchanged,
      zero,
    });
    // Design D16: what this run wrote is read back; what it shares with its verified parent
    // is proven by the index (the scrub re-reads that); `verify: full` reads back everything.
    const full = job.config.verify === "full";
    const blocks = full ? undefined : changedBlocks(copied.fresh);
    const toRead = blocks ? blocks.reduce((sum, i) => sum + index.blockLength(i), 0) : index.size;
    progress.setPhase("verifying", toRead);
    try {
      await verifyAndHeal(job, store, pool, run, writer, copied, rev, parent, blocks, progress);
      rev.stats.read_back_blocks = blocks?.length ?? index.count;
      if (run.sample) {
        rev.stats.verified_blocks = await verifySample(pool, index, writer.ref, run.sample, rev.id);
        rev.stats.verification = "sampled";
        rev.stats.verification_method = run.sample.method;
      } else rev.stats.verification = full ? "full" : "changed";
    } catch (e) {
      if (!(e instanceof VerificationError)) await writer.abort();
      throw e;
    }
    await writer.seal();
  } finally {
    progress.finish();
    pool.terminate();
    await run?.close();
  }
}

/**
 * Verification against this run's source hashes, healing what it can (issue 9): a block that does not
 * match is moved aside (chunked) and stored once more from the source; only what still
 * differs fails the backup. Damage the new revision inherited from a cow parent (its clone)
 * is the parent's: that parent is marked distrusted, so no later backup clones it again.
 */
async function verifyAndHeal(
  job: JobDir,
  store: Store,
  pool: WorkerPool,
  run: SourceRun,
  writer: RevisionWriter,
  copied: Copied,
  rev: Revision,
  parent: Revision | undefined,
  blocks: number[] | undefined,
  progress: Progress,
): Promise<void> {
  const { index } = copied;
  let bad = await checkBlocks(pool, index, writer.ref, blocks, (n) => progress.advance(n));
  if (bad.length === 0) return;
  const found = bad;
  let moved = await store.quarantine(damagedBlocks(index, bad));
  if (run.reread) {
    log.warning("Blocks do not match the source after copying; storing them again", {
      id: rev.id,
      blocks: bad.length,
      first: describe(bad[0]),
    });
    for (const m of bad) {
      const r = await pool.store({
        offset: m.block * BLOCK_SIZE,
        length: index.blockLength(m.block),
        store: writer.ref,
        content: run.reread(m.block),
        parentDigest: null,
        parentLength: 0,
        rewrite: true,
      }).catch(() => undefined);
      if (r) writer.stored(r.kind, r.digest, r.stored);
    }
    await pool.closeFiles();
    await writer.commit(index); // the healed blocks durable too
    bad = await checkBlocks(pool, index, writer.ref, bad.map((m) => m.block));
    if (bad.length === 0) moved = [];
    log.info(bad.length ? "Some blocks could not be healed" : "Healed from the source", {
      id: rev.id,
      healed: found.length - bad.length,
      left: bad.length,
    });
  }
  // Blocks this run did not write came from the parent (a cow clone): if the parent's own
  // copy is damaged too, it is never built on again.
  const inherited = found.filter((m) => !copied.fresh[m.block]).map((m) => m.block);
  if (inherited.length && parent && !store.sharedBlocks) {
    const own = await store.open(parent).then(
      (p) => p.index ? checkBlocks(pool, p.index, p.ref, inherited) : [],
      (e) => [{ block: inherited[0], reason: errorMessage(e) }],
    );
    if (own.length) {
      log.warning("The parent revision is damaged; it will not be built on again", {
        parent: parent.id,
        first: describe(own[0]),
      });
      await markDistrusted(job, parent, own.map(describe));
    }
  }
  if (bad.length) throw verificationFailed(rev.id, index, bad, moved);
}

/** The blocks this run stored or punched (the ones to read back under design D16). */
function changedBlocks(fresh: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < fresh.length; i++) if (fresh[i]) out.push(i);
  return out;
}

interface Copied {
  index: BlockIndex;
  /** 1 for blocks this run stored (written or deduplicated), 0 for inherited or holes. */
  fresh: Uint8Array;
  changed: number;
  unchanged: number;
  zero: number;
  /** Bytes of the blocks that differ from the parent (2.1's bytes_written). */
  written: number;
}

/**
 * The one loop: every block event of the source goes into the store through the Workers
 * (at most a window of blocks in flight, whatever the image size); the index collects the
 * digests they report.
 */
async function copyBlocks(
  run: SourceRun,
  writer: RevisionWriter,
  parentIndex: BlockIndex | undefined,
  pool: WorkerPool,
  progress: Progress,
): Promise<Copied> {
  let index: BlockIndex | undefined;
  let fresh: Uint8Array | undefined;
  const c = { changed: 0, unchanged: 0, zero: 0, written: 0 };
  // null: the parent has nothing here; undefined: legacy parent, its image is hashed.
  // Digests of blocks of different length never match, so a resize rewrites the tail.
  const parentDigest = (i: number): Uint8Array | null | undefined => {
    if (!parentIndex) return writer.legacyParentImage ? undefined : null;
    return i < parentIndex.count && !parentIndex.isZero(i) ? parentIndex.digest(i).slice() : null;
  };
  const parentLength = (i: number) =>
    parentIndex && i < parentIndex.count ? parentIndex.blockLength(i) : 0;
  const window = pool.size * 3;
  const inflight = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  try {
    for await (const ev of run.events) {
      if (failure) break;
      if (ev.kind === "size") {
        if (index) throw new BackyError("the source sent the image size twice");
        index = BlockIndex.empty(ev.size);
        await writer.setSize(ev.size);
        progress.setPhase("copying", ev.size);
        continue;
      }
      if (!index) throw new BackyError("the source sent a block before the image size");
      fresh ??= new Uint8Array(index.count);
      const i = ev.block;
      const idx = index;
      const length = idx.blockLength(i);
      const parent = parentDigest(i);
      if (ev.kind === "unchanged" || (ev.kind === "zero" && parent === null)) {
        // Known without reading: the parent's block (cow: already in the clone) or a hole.
        const digest = ev.kind === "unchanged" ? parent ?? null : null;
        idx.set(i, digest);
        if (digest) c.unchanged++;
        else c.zero++;
        progress.advance(length);
        continue;
      }
      while (inflight.size >= window) await Promise.race(inflight);
      if (failure) break;
      const content: StoreRequest["content"] = ev.kind === "file"
        ? { from: "file", path: ev.path }
        : ev.kind === "data"
        ? { from: "data", data: ev.data, uncovered: ev.uncovered, base: ev.base }
        : { from: "zero" };
      const p: Promise<void> = pool.store({
        offset: i * BLOCK_SIZE,
        length,
        store: writer.ref,
        content,
        parentDigest: parent,
        parentImage: parent === undefined ? writer.legacyParentImage : undefined,
        parentLength: parentLength(i),
      }).then((r) => {
        if (r.buffer) run.recycle(r.buffer);
        writer.stored(r.kind, r.digest, r.stored);
        idx.set(i, r.digest);
        progress.advance(length);
        if (r.kind === "zero") {
          c.zero++;
          if (parent !== null) fresh![i] = 1; // a hole punched into the parent's data
        } else if (r.kind === "same") c.unchanged++;
        else {
          c.changed++;
          c.written += length;
          fresh![i] = 1;
        }
      }, (e) => {
        failure ??= { error: e };
      }).finally(() => inflight.delete(p));
      inflight.add(p);
    }
  } finally {
    // Let the blocks in flight finish, so no Worker writes after we return.
    await Promise.allSettled(inflight);
  }
  if (failure) throw failure.error;
  if (!index) throw new BackyError("the source ended without an image size");
  return { index, fresh: fresh ?? new Uint8Array(index.count), ...c };
}
