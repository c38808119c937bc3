/**
 * The chunked store (design D2, D3): blocks content-addressed in the job's `chunks/`,
 * deduplicated across its revisions, compressed; a revision is its index. Works on any
 * filesystem.
 */
import { join } from "node:path";
import { BackyError } from "../util/errors.ts";
import { fsyncDir, removeIfExists } from "../util/fs.ts";
import { hex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { assertComplete, type Revision } from "../repo/revision.ts";
import { chunkPath, quarantineCorruptChunks } from "./chunkfile.ts";
import { collectGarbage, type GcResult } from "./gc.ts";
import type { DamagedBlock, RevisionData, RevisionWriter, Store } from "./store.ts";

export class ChunkedStore implements Store {
  readonly backend = "chunked" as const;
  readonly sharedBlocks = true;

  constructor(private readonly job: JobDir) {}

  async begin(rev: Revision): Promise<RevisionWriter> {
    const job = this.job;
    const chunks = job.chunksDir;
    await Deno.mkdir(chunks, { recursive: true });
    /** Chunks this run created (none existed before): freed again if the copy fails. */
    const fresh: Uint8Array[] = [];
    let bytesStored = 0;
    return {
      ref: { backend: "chunked", chunks },
      setSize: () => Promise.resolve(),
      stored(kind, digest, bytes) {
        bytesStored += bytes;
        if (kind === "written" && digest) fresh.push(digest);
      },
      async commit(index) {
        const dirs = new Set(fresh.map((d) => join(chunks, hex(d).slice(0, 2))));
        for (const dir of dirs) await fsyncDir(dir);
        await job.writeIndex(rev.id, index);
      },
      async abort() {
        // Only this run referenced these chunks (the backup lock keeps others out).
        for (const d of fresh) await removeIfExists(chunkPath(chunks, d)).catch(() => {});
        await job.removeIndex(rev.id).catch(() => {});
      },
      seal: () => Promise.resolve(),
      stats: () => ({ bytes_stored: bytesStored }),
    };
  }

  async open(rev: Revision): Promise<RevisionData> {
    assertComplete(rev);
    const index = await this.job.readIndex(rev.id);
    if (!index) {
      throw new BackyError(
        `revision ${rev.id}: index file ${this.job.indexPath(rev.id)} is missing`,
      );
    }
    return { size: index.size, index, ref: { backend: "chunked", chunks: this.job.chunksDir } };
  }

  imageName(): undefined {
    return undefined;
  }

  async removeRevision(id: string): Promise<void> {
    await this.job.removeRevision(id); // its chunks go with the next garbage collection
  }

  collectGarbage(): Promise<GcResult> {
    return collectGarbage(this.job);
  }

  quarantine(blocks: DamagedBlock[]): Promise<string[]> {
    return Promise.resolve(quarantineCorruptChunks(this.job.chunksDir, blocks));
  }
}
