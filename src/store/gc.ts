/**
 * Garbage collection of the chunked store: delete chunk files that no revision's index
 * references. Runs only while the caller holds both job locks (no backup can be writing
 * chunks its index does not list yet, no restore reading). Anything it cannot prove
 * unreferenced stays, and damaged metadata never stops it silently (issue 9):
 * - every revision counts that any of its files names (`.rev`, even unreadable, `.index`,
 *   `.index.mirror`); an index damaged in both copies protects what can still be read of it;
 * - only when a chunked revision's chunks cannot be known at all (no readable index header)
 *   is the sweep held, with the reason returned and logged.
 */
import { join } from "node:path";
import { errorMessage } from "../util/errors.ts";
import { isTempName, removeIfExists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { hex, salvageDigests } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete } from "../repo/revision.ts";

const log = logger("gc");

export interface GcResult {
  kept: number;
  removed: number;
  tempRemoved: number;
  /** Quarantined `*.corrupt` chunks removed: healed (rewritten) or no longer referenced. */
  corruptRemoved: number;
  /** Why nothing was swept (damaged metadata), if so. */
  held?: string;
}

/** Revision ids named by any metadata file of the job directory. */
async function revisionIds(job: JobDir): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const entry of Deno.readDir(job.path)) {
    if (!entry.isFile) continue;
    const m = /^(.+?)\.(rev|index|index\.mirror)$/.exec(entry.name);
    if (m && !entry.name.startsWith(".")) ids.add(m[1]);
  }
  return ids;
}

/** Digests a revision references, or why they cannot be known. */
async function referencedBy(
  job: JobDir,
  id: string,
  chunkedJob: boolean,
  rev: { backend: string; complete: boolean } | undefined,
): Promise<{ digests: Uint8Array[] } | { unknown: string }> {
  try {
    const index = await job.readIndex(id);
    if (index) {
      const out: Uint8Array[] = [];
      for (let i = 0; i < index.count; i++) if (!index.isZero(i)) out.push(index.digest(i));
      return { digests: out };
    }
  } catch (e) {
    // Both copies damaged: protect whatever either still names.
    const salvaged: Uint8Array[] = [];
    let readable = false;
    for (const file of [job.indexPath(id), job.mirrorPath(id)]) {
      const d = salvageDigests(await Deno.readFile(file).catch(() => new Uint8Array()));
      if (d) {
        readable = true;
        salvaged.push(...d);
      }
    }
    log.warning("Index damaged in both copies; protecting the chunks it still names", {
      id,
      error: errorMessage(e),
    });
    return readable ? { digests: salvaged } : { unknown: `index of ${id} unreadable: ${e}` };
  }
  // No index at all: fine for cow and legacy revisions, not for a complete chunked one (or
  // one whose .rev cannot say what it is, in a chunked job).
  if (rev ? rev.backend === "chunked" && rev.complete : chunkedJob) {
    return { unknown: `revision ${id} has no index file` };
  }
  return { digests: [] };
}

export async function collectGarbage(job: JobDir): Promise<GcResult> {
  const result: GcResult = { kept: 0, removed: 0, tempRemoved: 0, corruptRemoved: 0 };
  try {
    await Deno.stat(job.chunksDir);
  } catch {
    return result; // no chunk store: nothing to collect
  }
  const scan = await job.scan();
  const known = new Map(
    scan.revisions.map((r) => [r.id, { backend: r.backend, complete: isComplete(r) }]),
  );
  const referenced = new Set<string>();
  const unknown: string[] = [];
  for (const id of await revisionIds(job)) {
    const r = await referencedBy(job, id, job.config.backend === "chunked", known.get(id));
    if ("unknown" in r) unknown.push(r.unknown);
    else for (const d of r.digests) referenced.add(hex(d));
  }
  if (unknown.length) {
    result.held = `${unknown.join("; ")}: its chunks cannot be told from garbage. Restore ` +
      "the index from a copy of the job directory, or remove the revision's .rev (it cannot " +
      "be restored without its index) to let garbage collection go on";
    log.error("Garbage collection held", { reason: result.held });
  }
  for await (const dir of Deno.readDir(job.chunksDir)) {
    if (!dir.isDirectory || !/^[0-9a-f]{2}$/.test(dir.name)) continue;
    const sub = join(job.chunksDir, dir.name);
    const names = new Set<string>();
    for await (const entry of Deno.readDir(sub)) names.add(entry.name);
    for (const name of names) {
      const path = join(sub, name);
      if (isTempName(name)) {
        // Only a writer holding the backup lock creates these, and we hold it now.
        if (await removeIfExists(path)) result.tempRemoved++;
      } else if (/^[0-9a-f]{64}$/.test(name)) {
        if (referenced.has(name) || result.held) result.kept++;
        else if (await removeIfExists(path)) result.removed++;
      } else if (/^[0-9a-f]{64}\.corrupt$/.test(name)) {
        // Evidence of damage, kept until the chunk was stored anew or is not needed anymore.
        const digest = name.slice(0, 64);
        if (result.held && !names.has(digest)) continue;
        if (names.has(digest) || !referenced.has(digest)) {
          if (await removeIfExists(path)) result.corruptRemoved++;
        }
      }
    }
  }
  return result;
}
