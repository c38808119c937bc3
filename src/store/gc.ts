/**
 * Garbage collection of the chunked store: delete chunk files that no `<id>.index` in the
 * job directory references. Runs only while the caller holds both job locks (no backup can
 * be writing chunks its index does not list yet, no restore reading). Anything it cannot
 * prove unreferenced stays: one unreadable index aborts the whole collection.
 */
import { join } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { isTempName, removeIfExists } from "../util/fs.ts";
import { BlockIndex, hex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";

export interface GcResult {
  kept: number;
  removed: number;
  tempRemoved: number;
}

export async function collectGarbage(job: JobDir): Promise<GcResult> {
  const result: GcResult = { kept: 0, removed: 0, tempRemoved: 0 };
  try {
    await Deno.stat(job.chunksDir);
  } catch {
    return result; // no chunk store: nothing to collect
  }
  const referenced = new Set<string>();
  const scan = await job.scan();
  if (scan.problems.length) {
    throw new BackyError(`not collecting garbage: ${scan.problems[0]}`);
  }
  const indexed = new Set<string>();
  for await (const entry of Deno.readDir(job.path)) {
    if (!entry.isFile || !entry.name.endsWith(".index")) continue;
    const file = join(job.path, entry.name);
    let index: BlockIndex;
    try {
      index = BlockIndex.decode(await Deno.readFile(file), file);
    } catch (e) {
      throw new BackyError(`not collecting garbage: ${errorMessage(e)}`);
    }
    indexed.add(entry.name.slice(0, -6));
    for (let i = 0; i < index.count; i++) {
      if (!index.isZero(i)) referenced.add(hex(index.digest(i)));
    }
  }
  for (const rev of scan.revisions) {
    if (
      rev.backend === "chunked" && !indexed.has(rev.id) && typeof rev.stats.duration === "number"
    ) {
      throw new BackyError(
        `not collecting garbage: complete revision ${rev.id} has no index file`,
      );
    }
  }
  for await (const dir of Deno.readDir(job.chunksDir)) {
    if (!dir.isDirectory || !/^[0-9a-f]{2}$/.test(dir.name)) continue;
    const sub = join(job.chunksDir, dir.name);
    for await (const entry of Deno.readDir(sub)) {
      const path = join(sub, entry.name);
      if (isTempName(entry.name)) {
        // Only a writer holding the backup lock creates these, and we hold it now.
        if (await removeIfExists(path)) result.tempRemoved++;
      } else if (/^[0-9a-f]{64}$/.test(entry.name)) {
        if (referenced.has(entry.name)) result.kept++;
        else if (await removeIfExists(path)) result.removed++;
      }
    }
  }
  return result;
}
