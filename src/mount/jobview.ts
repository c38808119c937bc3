/**
 * One job as a mount sees it: its shared read lock, held while mounted (expiry then
 * postpones removing data instead of deleting a revision being served); its names,
 * re-read at most once a second so new backups and changed tags show up; and the sizes
 * and opened data of its revisions (complete revisions never change, so both are kept;
 * opened data holds the index, so only a few stay open beyond those being read).
 */
import { errorMessage } from "../util/errors.ts";
import type { Lock } from "../util/lock.ts";
import type { Logger } from "../util/log.ts";
import type { BlockIndex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import type { Revision } from "../repo/revision.ts";
import { type RevisionData, storeFor } from "../store/store.ts";
import { jobEntries, type JobEntry } from "./names.ts";

/** How long a job's listing is trusted before it is read again. */
export const LISTING_TTL_MS = 1000;
/** Opened revisions kept for the next open of the same file. */
const OPEN_KEPT = 4;

/** A revision's file attributes. */
export interface ImageInfo {
  size: number;
  /** Bytes in non-zero blocks (what `du` shows, and what SEEK_DATA finds). */
  allocated: number;
}

export type ServedData = RevisionData & { index: BlockIndex };

export class JobView {
  #entries = new Map<string, JobEntry>();
  #scanned = 0;
  #scanning: Promise<void> | undefined;
  #indexed = new Map<string, boolean>();
  #info = new Map<string, ImageInfo>();
  #open = new Map<string, Promise<ServedData>>();

  constructor(readonly job: JobDir, private lock: Lock | undefined, private log: Logger) {}

  /** The newest revision's time (the folder's own timestamp), or undefined when empty. */
  newestUs: number | undefined;

  /** The folder's names, at most LISTING_TTL_MS old. */
  async entries(): Promise<Map<string, JobEntry>> {
    if (Date.now() - this.#scanned >= LISTING_TTL_MS) {
      this.#scanning ??= this.#rescan().finally(() => this.#scanning = undefined);
      await this.#scanning;
    }
    return this.#entries;
  }

  async #rescan(): Promise<void> {
    const scan = await this.job.scan();
    for (const rev of scan.revisions) {
      if (this.#indexed.has(rev.id)) continue;
      const has = await Deno.stat(this.job.indexPath(rev.id)).then(() => true, () => false);
      this.#indexed.set(rev.id, has);
      if (!has && typeof rev.stats.duration === "number") {
        this.log.warning("Not serving a revision without an index (backy 2.1)", {
          job: this.job.path,
          id: rev.id,
          image: this.job.imagePath(rev.id),
        });
      }
    }
    this.#entries = jobEntries(scan.revisions, (r) => this.#indexed.get(r.id) === true);
    this.newestUs = [...this.#entries.values()].at(-1)?.rev.timestampUs ?? this.newestUs;
    for (const id of this.#info.keys()) {
      if (this.#entries.get(id)?.kind !== "image") this.#info.delete(id);
    }
    this.#scanned = Date.now();
  }

  /** Opens a revision's data (cached); a clear BackyError when it cannot be read. */
  data(rev: Revision): Promise<ServedData> {
    let p = this.#open.get(rev.id);
    if (!p) {
      p = storeFor(this.job, rev.backend).open(rev).then((d) => {
        if (!d.index) throw new Error(`revision ${rev.id} has no index`);
        return d as ServedData;
      });
      p.catch(() => this.#open.delete(rev.id));
      this.#open.set(rev.id, p);
      while (this.#open.size > OPEN_KEPT) this.#open.delete(this.#open.keys().next().value!);
    }
    return p;
  }

  /** Size and allocated bytes of a revision's image. */
  async info(rev: Revision): Promise<ImageInfo> {
    const known = this.#info.get(rev.id);
    if (known) return known;
    const d = await this.data(rev);
    let allocated = 0;
    for (let i = 0; i < d.index.count; i++) {
      if (!d.index.isZero(i)) allocated += d.index.blockLength(i);
    }
    const info = { size: d.size, allocated };
    this.#info.set(rev.id, info);
    return info;
  }

  /** Releases the read lock (when the mount ends). */
  close(): void {
    try {
      this.lock?.release();
    } catch (e) {
      this.log.warning("Releasing a read lock failed", { error: errorMessage(e) });
    }
    this.lock = undefined;
  }
}
