/**
 * The cow store (design D2): each revision is a full sparse raw image `<id>` in the job
 * directory, created as a reflink clone of its parent and patched in place, so `dd if=last`
 * and `rbd import $(backy find ...)` work as in backy 2.1. Without reflink it still works,
 * as a sparse full copy, and says so loudly.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { exists, fsyncFile, removeIfExists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { firstLine, run } from "../util/proc.ts";
import type { BlockIndex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { assertComplete, type Revision } from "../repo/revision.ts";
import type { GcResult } from "./gc.ts";
import type { RevisionData, RevisionWriter, Store } from "./store.ts";

const log = logger("cow");

/** Clones an image: reflink where possible, else a sparse full copy (and says so). */
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

export class CowStore implements Store {
  readonly backend = "cow" as const;
  readonly sharedBlocks = false;

  constructor(private readonly job: JobDir) {}

  async begin(
    rev: Revision,
    parent: Revision | undefined,
    parentIndex: BlockIndex | undefined,
  ): Promise<RevisionWriter> {
    const job = this.job;
    const image = job.imagePath(rev.id);
    const fromParent = parent?.backend === "cow";
    if (fromParent) await cloneImage(job.imagePath(parent.id), image);
    else await Deno.writeFile(image, new Uint8Array(), { mode: 0o640 });
    await Deno.chmod(image, 0o640);
    return {
      ref: { backend: "cow", image },
      // A legacy 2.1 parent has no index: its image is hashed block by block instead.
      legacyParentImage: fromParent && !parentIndex ? job.imagePath(parent.id) : undefined,
      setSize: (size) => Deno.truncate(image, size),
      stored() {},
      async commit(index) {
        fsyncFile(image);
        await job.writeIndex(rev.id, index);
      },
      async abort() {
        await removeIfExists(image).catch(() => {});
        await job.removeIndex(rev.id).catch(() => {});
      },
      // Completed data is read-only (spec 2.8), like its .rev and .index.
      seal: () => Deno.chmod(image, 0o440),
      stats: () => ({}),
    };
  }

  async open(rev: Revision, opts: { unchecked?: boolean } = {}): Promise<RevisionData> {
    assertComplete(rev);
    const index = await this.job.readIndex(rev.id);
    const image = this.job.imagePath(rev.id);
    if (!index && rev.indexed) {
      // Not a 2.x revision: its index is lost, and without it nothing proves the image.
      if (!opts.unchecked) {
        throw new BackyError(
          `revision ${rev.id}: its index file ${this.job.indexPath(rev.id)} is missing, so ` +
            "its image cannot be checked; use --force to restore it unchecked",
        );
      }
      log.warning(
        "RESTORING UNCHECKED: the revision's index is lost; its blocks are not checked",
        { id: rev.id },
      );
    }
    let size: number;
    try {
      size = (await Deno.stat(image)).size;
    } catch (e) {
      throw new BackyError(`revision ${rev.id}: cannot open image ${image}: ${errorMessage(e)}`);
    }
    if (index && index.size !== size) {
      throw new BackyError(
        `revision ${rev.id}: image ${image} has ${size} bytes but its index says ${index.size}`,
      );
    }
    return { size, index, ref: { backend: "cow", image } };
  }

  imageName(id: string): string {
    return id;
  }

  async removeRevision(id: string): Promise<void> {
    await this.job.removeRevision(id, [this.job.imagePath(id)]);
  }

  /** Images whose revision is gone (an expiry killed after removing the metadata). */
  async collectGarbage(): Promise<GcResult> {
    const result: GcResult = { kept: 0, removed: 0, tempRemoved: 0, corruptRemoved: 0 };
    for await (const e of Deno.readDir(this.job.path)) {
      if (!e.isFile || !/^[2-9A-HJ-NP-Za-km-z]{22}$/.test(e.name)) continue;
      if (await exists(this.job.revPath(e.name))) {
        result.kept++;
        continue;
      }
      log.info("Removing the image of a removed revision", { file: e.name });
      if (await removeIfExists(this.job.imagePath(e.name))) result.removed++;
    }
    return result;
  }

  quarantine(): Promise<string[]> {
    return Promise.resolve([]); // a damaged image block is healed by the next backup
  }
}
