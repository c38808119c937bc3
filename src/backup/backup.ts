/**
 * `backy backup TAGS` for block-readable sources (spec 3.1, design D2-D5, D11):
 * lock, clean incomplete revisions, create the revision, copy only changed blocks into the
 * store, verify everything against the source hashes, and only then make it count.
 */
import { join } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { fsyncDir, fsyncFile, removeIfExists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { firstLine, run } from "../util/proc.ts";
import { newRevisionId } from "../repo/id.ts";
import { BLOCK_SIZE, blockCount, BlockIndex, hex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete, type Revision } from "../repo/revision.ts";
import { openFileSource } from "../sources/file.ts";
import { chunkPath, quarantineCorruptChunks } from "../store/chunkfile.ts";
import { cephDriver } from "./ceph_backup.ts";
import type { StoreRef } from "./protocol.ts";
import { pipeline, WorkerPool } from "./pool.ts";

const log = logger("backup");

export class VerificationError extends BackyError {}

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
    await job.removeRevision(rev.id);
  }
  return kept;
}

/** The newest complete revision we may diff against: trusted, same backend. */
export function pickParent(revisions: Revision[], backend: string): Revision | undefined {
  for (let i = revisions.length - 1; i >= 0; i--) {
    const r = revisions[i];
    if (isComplete(r) && r.trust !== "distrusted") return r.backend === backend ? r : undefined;
  }
  return undefined;
}

/** Clones the parent image: reflink where possible, else a sparse full copy (and says so). */
async function cloneImage(from: string, to: string): Promise<void> {
  const cp = Deno.env.get("BACKY_CP") ?? "cp";
  const reflink = await run(cp, ["--reflink=always", from, to]);
  if (reflink.code === 0) return;
  await removeIfExists(to);
  log.warning(
    "REFLINK NOT SUPPORTED: making a full sparse copy of the parent image; this costs the " +
      "image's full space per revision. Use a reflink filesystem (XFS, btrfs) or the chunked backend.",
    { reason: firstLine(reflink.stderr) },
  );
  const copy = await run(cp, ["--sparse=always", from, to]);
  if (copy.code !== 0) {
    await removeIfExists(to);
    throw new BackyError(`cannot copy ${from} to ${to}: ${firstLine(copy.stderr)}`);
  }
}

/** What differs per source type: checks, parent choice, copying, snapshot hygiene. */
export interface BackupDriver {
  /** Before the revision exists: fail early (nothing created) and choose the parent. */
  prepare(revisions: Revision[]): Promise<{ parent?: Revision; info: Record<string, unknown> }>;
  /** Copies into the store and verifies; VerificationError on a mismatch. */
  run(
    rev: Revision,
    parent: Revision | undefined,
    parentIndex: BlockIndex | undefined,
  ): Promise<void>;
  /** Afterwards, success or not; `newestGood` is the newest complete, trusted revision. */
  finish?(newestGood: Revision | undefined): Promise<void>;
}

function fileDriver(job: JobDir): BackupDriver {
  let source: { path: string; size: number };
  return {
    async prepare(revisions) {
      source = await openFileSource(job.path, String(job.config.source.filename));
      return {
        parent: pickParent(revisions, job.config.backend),
        info: { source: source.path, size: source.size },
      };
    },
    run: (rev, parent, parentIndex) => copyAndVerify(job, rev, source, parent, parentIndex),
  };
}

export async function backup(job: JobDir, tags: string[]): Promise<BackupOutcome> {
  const driver = job.config.type === "file" ? fileDriver(job) : cephDriver(job);
  const lock = await job.lockBackup();
  const readLock = await job.lockRead();
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.warning(p);
    const revisions = await removeIncomplete(job, scan.revisions);
    const backend = job.config.backend;
    const { parent, info } = await driver.prepare(revisions);
    const parentIndex = parent ? await job.readIndex(parent.id) : undefined;
    const start = Date.now();
    const rev: Revision = {
      id: newRevisionId(),
      timestampUs: start * 1000,
      parent: parent?.id ?? null,
      stats: { bytes_written: 0 },
      tags: [...new Set(tags)].sort(),
      backend,
      trust: "trusted",
      extra: {},
    };
    log.info("Creating revision", {
      id: rev.id,
      tags: rev.tags.join(","),
      parent: rev.parent ?? "-",
      backend,
      ...info,
    });
    await job.writeRevision(rev, 0o640);
    try {
      await driver.run(rev, parent, parentIndex);
    } catch (e) {
      rev.error = errorMessage(e);
      if (e instanceof VerificationError) rev.trust = "distrusted";
      else {
        // Our own unfinished data: free the space now (ENOSPC), keep the .rev as the record.
        await removeIfExists(job.imagePath(rev.id)).catch(() => {});
        await removeIfExists(job.indexPath(rev.id)).catch(() => {});
      }
      await job.writeRevision(rev, 0o640).catch(() => {});
      log.error("Backup failed", { id: rev.id, error: rev.error });
      await driver.finish?.(newestGood(revisions)).catch((f) =>
        log.warning("Cleanup after failure failed", { error: errorMessage(f) })
      );
      throw e;
    }
    rev.stats.duration = Math.round((Date.now() - start) / 100) / 10;
    // Completed data is read-only (spec 2.8), like its .rev and .index.
    if (backend === "cow") await Deno.chmod(job.imagePath(rev.id), 0o440);
    await job.writeRevision(rev, 0o440);
    await job.setLast(rev);
    log.info("Backup complete", {
      id: rev.id,
      bytes_written: rev.stats.bytes_written,
      duration: rev.stats.duration,
    });
    await driver.finish?.(rev);
    return { revision: rev };
  } finally {
    readLock.release();
    lock.release();
  }
}

function newestGood(revisions: Revision[]): Revision | undefined {
  return revisions.filter((r) => isComplete(r) && r.trust !== "distrusted").at(-1);
}

/** Where the new revision's blocks go: a cow image cloned from the parent, or the chunks. */
export async function createStore(
  job: JobDir,
  rev: Revision,
  parent: Revision | undefined,
): Promise<StoreRef> {
  if (rev.backend === "cow") {
    const image = job.imagePath(rev.id);
    if (parent && parent.backend === "cow") await cloneImage(job.imagePath(parent.id), image);
    else await Deno.writeFile(image, new Uint8Array(), { mode: 0o640 });
    await Deno.chmod(image, 0o640);
    return { backend: "cow", image };
  }
  await Deno.mkdir(job.chunksDir, { recursive: true });
  return { backend: "chunked", chunks: job.chunksDir };
}

/** Makes the copied data durable before the index that describes it is written. */
export async function syncStore(store: StoreRef, touchedDirs: Iterable<string>): Promise<void> {
  if (store.backend === "cow") fsyncFile(store.image);
  for (const dir of touchedDirs) await fsyncDir(dir);
}

async function copyAndVerify(
  job: JobDir,
  rev: Revision,
  source: { path: string; size: number },
  parent: Revision | undefined,
  parentIndex: BlockIndex | undefined,
): Promise<void> {
  const store = await createStore(job, rev, parent);
  if (store.backend === "cow") await Deno.truncate(store.image, source.size);
  const count = blockCount(source.size);
  const index = BlockIndex.empty(source.size);
  // A legacy 2.1 parent has no index: hash its image once instead (cow only).
  const legacyParentImage = parent && !parentIndex && rev.backend === "cow"
    ? job.imagePath(parent.id)
    : undefined;
  const pool = new WorkerPool();
  const window = pool.size * 3;
  const stats = { changed: 0, zero: 0, same: 0, stored: 0, written: 0 };
  const touchedDirs = new Set<string>();
  /** Chunks this run created (none existed before): freed again if the copy fails. */
  const fresh: Uint8Array[] = [];
  try {
    await pipeline(count, window, (i) => {
      const offset = i * BLOCK_SIZE;
      const length = Math.min(BLOCK_SIZE, source.size - offset);
      // null: the parent has nothing here; undefined: legacy parent, hash its image.
      // Digests of blocks of different length never match, so a resize rewrites the tail.
      let parentDigest: Uint8Array | null | undefined = null;
      if (parentIndex) {
        if (i < parentIndex.count && !parentIndex.isZero(i)) {
          parentDigest = parentIndex.digest(i).slice();
        }
      } else if (legacyParentImage) parentDigest = undefined;
      return pool.backup({
        offset,
        length,
        source: source.path,
        store,
        parentDigest,
        parentImage: parentDigest === undefined ? legacyParentImage : undefined,
      }).then((r) => {
        if (r.kind === "written" && r.digest && store.backend === "chunked") fresh.push(r.digest);
        return r;
      });
    }, (i, r) => {
      index.set(i, r.digest);
      if (r.kind === "zero") stats.zero++;
      else if (r.kind === "same") stats.same++;
      else {
        stats.changed++;
        stats.written += index.blockLength(i);
        stats.stored += r.stored;
        if (r.kind === "written" && r.digest && store.backend === "chunked") {
          touchedDirs.add(join(store.chunks, hex(r.digest).slice(0, 2)));
        }
      }
    });
    await pool.closeFiles();
    await syncStore(store, touchedDirs);
    await job.writeIndex(rev.id, index);
  } catch (e) {
    // A failed copy frees its data (disk full!); only this run referenced these chunks.
    if (store.backend === "chunked") {
      for (const d of fresh) await removeIfExists(chunkPath(store.chunks, d)).catch(() => {});
    }
    pool.terminate();
    throw e;
  }
  try {
    rev.stats.bytes_written = stats.written;
    rev.stats.blocks = { changed: stats.changed, unchanged: stats.same, zero: stats.zero };
    if (store.backend === "chunked") rev.stats.bytes_stored = stats.stored;
    log.info("Data copied, verifying", {
      id: rev.id,
      changed: stats.changed,
      unchanged: stats.same,
      zero: stats.zero,
    });

    // Verification (D11, file sources: in full): read every block back through the store
    // and compare with the hashes taken from the source.
    const mismatches: string[] = [];
    const suspects: { digest: Uint8Array; length: number }[] = [];
    await pipeline(count, window, (i) =>
      pool.check({
        offset: i * BLOCK_SIZE,
        length: index.blockLength(i),
        store,
        digest: index.isZero(i) ? null : index.digest(i).slice(),
      }).catch((e) => ({ ok: false, reason: errorMessage(e) })), (i, r) => {
      if (r.ok) return;
      mismatches.push(`block ${i} (offset ${i * BLOCK_SIZE}): ${r.reason}`);
      if (!index.isZero(i)) {
        suspects.push({ digest: index.digest(i).slice(), length: index.blockLength(i) });
      }
    });
    if (mismatches.length) {
      // A rotten chunk would otherwise be deduplicated against by every later backup.
      const moved = store.backend === "chunked"
        ? quarantineCorruptChunks(store.chunks, suspects)
        : [];
      throw new VerificationError(
        `verification of revision ${rev.id} failed: ${mismatches.length} of ${count} blocks ` +
          `differ from the source; first: ${mismatches[0]}` +
          (moved.length
            ? `; moved ${moved.length} corrupt chunk file(s) aside to *.corrupt, ` +
              "the next backup stores them anew"
            : ""),
      );
    }
    rev.stats.verification = "full";
  } finally {
    pool.terminate();
  }
}
