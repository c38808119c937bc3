/**
 * Backups of Ceph RBD images (`ceph-rbd`, `flyingcircus`; design D11, D12): snapshot,
 * stream `rbd export-diff` (incremental from the parent's snapshot when it still exists
 * and the parent is trusted, else everything, sparse) into the store, verify a random 1 %
 * of blocks against the snapshot, keep only the newest good revision's snapshot.
 */
import { createHash } from "node:crypto";
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { BLOCK_SIZE, blockCount, type BlockIndex, sameDigest } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete, type Revision } from "../repo/revision.ts";
import { parseDiff } from "../sources/ceph/diff.ts";
import { openSnapshotReader, type SnapshotReader } from "../sources/ceph/blockreader.ts";
import { cephSettings, CephSource, SNAP_PREFIX } from "../sources/ceph/source.ts";
import { applyDiff } from "./apply.ts";
import { type BackupDriver, createStore, syncStore, VerificationError } from "./backup.ts";
import { WorkerPool } from "./pool.ts";

const log = logger("ceph");

/** Sampled verification stops after this long and counts as passed (spec 3.6). */
const VERIFY_CAP_MS = 5 * 60 * 1000;

export function cephDriver(job: JobDir): BackupDriver {
  const source = new CephSource(cephSettings(job.config.type, job.config.source));
  let diffFrom: Revision | undefined;
  /** This image's snapshots as prepare() found them, and the one run() created. */
  let listedSnaps: Set<string> | undefined;
  let created: string | undefined;
  return {
    async prepare(revisions) {
      // Asked once per run (cached); meanwhile the other rbd calls go on.
      source.rbd.supportsWholeObject().catch(() => {}); // its error surfaces where awaited
      // Both rbd calls at once (each is a cluster connection, ~0.1 s); checkReady's error
      // ("image does not exist") is the one to report.
      const listed = source.snapshots();
      listed.catch(() => {});
      await source.checkReady();
      const snaps = await listed;
      listedSnaps = snaps;
      // Diff from the newest trusted revision whose snapshot still exists (2.5 rule).
      const candidates = revisions.filter((r) =>
        isComplete(r) && r.trust !== "distrusted" && r.backend === job.config.backend
      );
      diffFrom = source.settings.fullAlways
        ? undefined
        : [...candidates].reverse().find((r) => snaps.has(SNAP_PREFIX + r.id));
      // A full backup still clones the newest revision (cow): unchanged blocks stay shared.
      const parent = diffFrom ?? candidates.at(-1);
      return {
        parent,
        info: {
          source: source.spec,
          mode: diffFrom ? `diff from ${SNAP_PREFIX}${diffFrom.id}` : "full",
        },
      };
    },

    async run(rev, parent, parentIndex) {
      const snap = SNAP_PREFIX + rev.id;
      // Workers first: starting them (a few ms of CPU each) overlaps the snapshot's creation.
      // Twice the usual number: here they mostly wait for chunk/image writes (the disk is busy
      // with Ceph's reads too), not for the CPU. 2 vs 4, 2 GiB full backup: ~0.6 s less.
      const pool = new WorkerPool(2 * WorkerPool.defaultSize());
      let reader: Promise<SnapshotReader> | undefined;
      try {
        const how = await source.createSnapshot(rev.id);
        created = snap;
        rev.stats.snapshot = how.method;
        // The snapshot's size and a reader for verification (qemu-nbd), started while the
        // data streams: its start-up then costs no time of its own.
        reader = source.rbd.info(`${source.spec}@${snap}`).then((info) => {
          if (!info) throw new BackyError(`snapshot ${source.spec}@${snap} does not exist`);
          return openSnapshotReader(source.settings.pool, source.settings.image, snap, {
            size: info.size,
          });
        });
        reader.catch(() => {}); // awaited before verification
        const mode = diffFrom && parentIndex ? "diff" : "full";
        const store = await createStore(job, rev, parent);
        const wholeObject = await source.rbd.supportsWholeObject();
        const fromSnap = mode === "diff" ? SNAP_PREFIX + diffFrom!.id : undefined;
        const stream = source.rbd.exportDiff(source.spec, snap, fromSnap, { wholeObject });
        let stats;
        try {
          // Data as views of rbd's pipe reads, not fresh 4 MiB copies: allocation and page
          // faults had made the main thread the bottleneck.
          stats = await applyDiff(parseDiff(stream.stdout, { views: true }), pool, {
            mode,
            store,
            parentIndex,
            fromSnap,
            toSnap: snap,
            onSize: async (size) => {
              if (store.backend === "cow") await Deno.truncate(store.image, size);
            },
          });
        } catch (e) {
          stream.kill();
          await stream.done.catch(() => {});
          throw e;
        }
        await stream.done; // a stream that ended early only shows in rbd's exit status
        await pool.closeFiles();
        await syncStore(store, stats.touchedChunkDirs);
        await job.writeIndex(rev.id, stats.index);
        rev.stats.bytes_written = stats.written;
        rev.stats.bytes_received = stats.received;
        rev.stats.blocks = { changed: stats.changed, unchanged: stats.unchanged, zero: stats.zero };
        if (store.backend === "chunked") rev.stats.bytes_stored = stats.stored;
        rev.stats.mode = mode;
        log.info("Data copied, verifying a sample", {
          id: rev.id,
          mode,
          received: stats.received,
          changed: stats.changed,
        });
        const checked = await verifySample(reader, snap, stats.index, store, pool, rev.id);
        rev.stats.verification = "sampled";
        rev.stats.verified_blocks = checked;
        rev.stats.verification_method = "qemu-nbd";
      } finally {
        pool.terminate();
        await reader?.then((r) => r.close(), () => {});
      }
    },

    async finish(newestGood) {
      // The snapshots listed before this run plus its own: no second `snap ls` (~0.1 s). Only
      // backy makes `backy-*` snapshots, and the job lock keeps other runs of this job out.
      const known = listedSnaps && new Set([...listedSnaps, ...(created ? [created] : [])]);
      await source.cleanupSnapshots(newestGood?.id, known);
    },
  };
}

/**
 * Reads a random 1 % of the blocks (at least one) from the snapshot and compares them with
 * the stored revision; also the total size. Random order, so a time cap still spreads.
 */
async function verifySample(
  opened: Promise<SnapshotReader>,
  snap: string,
  index: BlockIndex,
  store: Parameters<WorkerPool["check"]>[0]["store"],
  pool: WorkerPool,
  id: string,
): Promise<number> {
  let reader;
  try {
    reader = await opened;
  } catch (e) {
    throw new BackyError(`cannot verify revision ${id}: ${errorMessage(e)}`);
  }
  if (reader.size !== index.size) {
    throw new VerificationError(
      `verification of revision ${id} failed: snapshot has ${reader.size} bytes, revision ${index.size}`,
    );
  }
  const count = blockCount(index.size);
  if (count === 0) return 0;
  const sample = sampleIndices(count, Math.max(1, Math.floor(count * 0.01)));
  const started = Date.now();
  let checked = 0;
  for (const i of sample) {
    if (Date.now() - started > VERIFY_CAP_MS) {
      log.warning("Verification time cap reached", { id, checked, planned: sample.length });
      break;
    }
    const length = index.blockLength(i);
    const data = await reader.read(i * BLOCK_SIZE, length);
    const zero = data.every((b) => b === 0);
    const digest = zero ? null : new Uint8Array(createHash("sha256").update(data).digest());
    const expected = index.isZero(i) ? null : index.digest(i);
    const indexOk = digest === null
      ? expected === null
      : expected !== null && sameDigest(digest, expected);
    // Only a block the index got right is read back: the snapshot's digest may name no
    // chunk at all, and a missing chunk is a verification failure, not a crash.
    const stored = indexOk
      ? await pool.check({ offset: i * BLOCK_SIZE, length, store, digest })
        .catch((e) => ({ ok: false, reason: errorMessage(e) }))
      : { ok: false, reason: "the revision's index does not match" };
    if (!indexOk || !stored.ok) {
      throw new VerificationError(
        `verification of revision ${id} failed: block ${i} (offset ${i * BLOCK_SIZE}) ` +
          `differs from snapshot ${snap}${stored.reason ? `: ${stored.reason}` : ""}`,
      );
    }
    checked++;
  }
  return checked;
}

/** `k` distinct indices from [0, n), in random order (partial Fisher-Yates). */
export function sampleIndices(n: number, k: number): number[] {
  const picked = new Map<number, number>();
  const out: number[] = [];
  for (let i = 0; i < Math.min(k, n); i++) {
    const j = i + Math.floor(Math.random() * (n - i));
    const vj = picked.get(j) ?? j;
    picked.set(j, picked.get(i) ?? i);
    out.push(vj);
  }
  return out;
}
