/** What the scheduler needs to know of a job directory, read from its `.rev` files. */
import { scanRevisions } from "../repo/jobdir.ts";
import { isComplete } from "../repo/revision.ts";

export interface JobSummary {
  /** Unix seconds of the newest complete revision carrying each tag. */
  lastByTag: Map<string, number>;
  newest?: { time: number; tags: string[]; duration?: number };
  completeCount: number;
  /** Set when the newest revision failed its verification (kept as evidence). */
  verificationFailed?: string;
  /** Directory mtime when read: a cheap "did anything change" test. */
  mtimeMs: number;
}

export const EMPTY_SUMMARY: JobSummary = { lastByTag: new Map(), completeCount: 0, mtimeMs: -1 };

export async function summarizeJob(dir: string): Promise<JobSummary> {
  let mtimeMs: number;
  try {
    mtimeMs = (await Deno.stat(dir)).mtime?.getTime() ?? 0;
  } catch {
    return EMPTY_SUMMARY;
  }
  const { revisions } = await scanRevisions(dir);
  const lastByTag = new Map<string, number>();
  let newest: JobSummary["newest"];
  let completeCount = 0;
  for (const r of revisions) {
    if (!isComplete(r)) continue;
    completeCount++;
    const t = r.timestampUs / 1e6;
    for (const tag of r.tags) lastByTag.set(tag, Math.max(lastByTag.get(tag) ?? -Infinity, t));
    newest = { time: t, tags: r.tags, duration: r.stats.duration };
  }
  const last = revisions.at(-1);
  const verificationFailed = last && !isComplete(last) && last.trust === "distrusted"
    ? last.error ?? "verification failed"
    : undefined;
  return { lastByTag, newest, completeCount, verificationFailed, mtimeMs };
}

/** Re-reads only when the directory changed since `old` was taken. */
export async function refreshSummary(dir: string, old: JobSummary): Promise<JobSummary> {
  try {
    const m = (await Deno.stat(dir)).mtime?.getTime() ?? 0;
    if (m === old.mtimeMs) return old;
  } catch {
    return EMPTY_SUMMARY;
  }
  return await summarizeJob(dir);
}
