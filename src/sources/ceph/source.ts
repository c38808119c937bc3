/**
 * The `ceph-rbd` and `flyingcircus` sources (spec 3.3-3.6, design D11, D12): snapshot
 * `backy-<id>`, stream `rbd export-diff` (incremental from the parent's snapshot when it
 * still exists and the parent is trusted, else everything, sparse) as block events, verify
 * a random sample against the snapshot (read again through qemu-nbd), keep only the newest
 * good revision's snapshot.
 */
import { BackyError } from "../../util/errors.ts";
import type { BlockIndex } from "../../repo/index_file.ts";
import type { Revision } from "../../repo/revision.ts";
import type { SampleReader, Source, SourceEvent, SourceRun } from "../source.ts";
import { assembleBlocks, BlockBuffers } from "./assemble.ts";
import { openSnapshotReader } from "./blockreader.ts";
import { parseDiff } from "./diff.ts";
import { type CephSettings, CephSnapshots, SNAP_PREFIX } from "./snapshots.ts";

export class CephSource implements Source {
  /**
   * Twice the usual Workers: here they mostly wait for chunk/image writes (the disk is busy
   * with Ceph's reads too), not for the CPU. 2 vs 4, 2 GiB full backup: ~0.6 s less.
   */
  readonly workersPerCore = 2;
  readonly snaps: CephSnapshots;
  #diffFrom: Revision | undefined;
  /** This image's snapshots as prepare() found them, and the one start() created. */
  #listed: Set<string> | undefined;
  #created: string | undefined;

  constructor(settings: CephSettings) {
    this.snaps = new CephSnapshots(settings);
  }

  async prepare(candidates: Revision[]) {
    const { rbd, spec } = this.snaps;
    // Asked once per run (cached); meanwhile the other rbd calls go on.
    rbd.supportsWholeObject().catch(() => {}); // its error surfaces where awaited
    // Both rbd calls at once (each is a cluster connection, ~0.1 s); checkReady's error
    // ("image does not exist") is the one to report.
    const listed = this.snaps.snapshots();
    listed.catch(() => {});
    await this.snaps.checkReady();
    const snaps = await listed;
    this.#listed = snaps;
    // Diff from the newest trusted revision whose snapshot still exists (2.5 rule).
    this.#diffFrom = this.snaps.settings.fullAlways
      ? undefined
      : [...candidates].reverse().find((r) => snaps.has(SNAP_PREFIX + r.id));
    // A full backup still builds on the newest revision (cow: unchanged blocks stay shared).
    const parent = this.#diffFrom ?? candidates.at(-1);
    return {
      parent,
      info: {
        source: spec,
        mode: this.#diffFrom ? `diff from ${SNAP_PREFIX}${this.#diffFrom.id}` : "full",
      },
    };
  }

  async start(
    rev: Revision,
    _parent: Revision | undefined,
    parentIndex: BlockIndex | undefined,
  ): Promise<SourceRun> {
    const { rbd, spec } = this.snaps;
    const snap = SNAP_PREFIX + rev.id;
    const how = await this.snaps.createSnapshot(rev.id);
    this.#created = snap;
    // The snapshot's size and a reader for verification (qemu-nbd), started while the data
    // streams: its start-up then costs no time of its own.
    const reader: Promise<SampleReader> = rbd.info(`${spec}@${snap}`).then((info) => {
      if (!info) throw new BackyError(`snapshot ${spec}@${snap} does not exist`);
      const { pool, image } = this.snaps.settings;
      return openSnapshotReader(pool, image, snap, { size: info.size });
    });
    reader.catch(() => {}); // awaited at verification
    const mode = this.#diffFrom && parentIndex ? "diff" : "full";
    const fromSnap = mode === "diff" ? SNAP_PREFIX + this.#diffFrom!.id : undefined;
    const stream = rbd.exportDiff(spec, snap, fromSnap, {
      wholeObject: await rbd.supportsWholeObject(),
    });
    const buffers = new BlockBuffers();
    let received = 0;
    let complete = false;
    const abort = async () => {
      if (complete) return;
      stream.kill();
      await stream.done.catch(() => {});
    };
    async function* events(): AsyncGenerator<SourceEvent> {
      try {
        // Data as views of rbd's pipe reads, not fresh 4 MiB copies: allocation and page
        // faults had made the main thread the bottleneck.
        yield* assembleBlocks(parseDiff(stream.stdout, { views: true }), {
          mode,
          parent: parentIndex,
          fromSnap,
          toSnap: snap,
          buffers,
          received: (n) => received += n,
        });
        await stream.done; // a stream that ended early only shows in rbd's exit status
        complete = true;
      } finally {
        await abort();
      }
    }
    return {
      events: events(),
      recycle: (buffer) => buffers.give(buffer),
      sample: { method: "qemu-nbd", against: `snapshot ${snap}`, open: () => reader },
      stats: () => ({ bytes_received: received, mode, snapshot: how.method }),
      close: async () => {
        await abort(); // never iterated to the end (e.g. the store could not begin)
        await reader.then((r) => r.close(), () => {});
      },
    };
  }

  async finish(newestGood: Revision | undefined): Promise<void> {
    // The snapshots listed before this run plus its own: no second `snap ls` (~0.1 s). Only
    // backy makes `backy-*` snapshots, and the job lock keeps other runs of this job out.
    const known = this.#listed &&
      new Set([...this.#listed, ...(this.#created ? [this.#created] : [])]);
    await this.snaps.cleanupSnapshots(newestGood?.id, known);
  }
}
