/** What the scheduler needs to know of a job directory, read from its `.rev` files. */
import { join } from "node:path";
import { parseRevision, type Trust } from "../repo/revision.ts";
import { quickRevision } from "./quickrev.ts";
import { byHistory, revisionIdOf } from "../repo/jobdir.ts";

export interface JobSummary {
  /** Unix seconds of the newest complete revision carrying each tag. */
  lastByTag: Map<string, number>;
  newest?: { time: number; tags: string[]; duration?: number; bytes: number };
  completeCount: number;
  /** Complete revisions marked `trust: distrusted` (scrub or `distrust` found them doubtful). */
  distrustedCount: number;
  /** Sum of `bytes_written` over complete revisions: the estimate `backy status` prints. */
  storedBytes: number;
  /** Set when the newest revision failed its verification (kept as evidence). */
  verificationFailed?: string;
  /** Unix seconds when the least recently proven complete revision was last proven (scrub or backup). */
  oldestProven?: number;
  /** `.rev` files that cannot be read (damaged metadata: reported, never acted on). */
  damagedCount: number;
  /** Directory mtime when read: a cheap "did anything change" test. */
  mtimeMs: number;
}

export const EMPTY_SUMMARY: JobSummary = {
  lastByTag: new Map(),
  completeCount: 0,
  distrustedCount: 0,
  damagedCount: 0,
  storedBytes: 0,
  mtimeMs: -1,
};

/** The fields of a `.rev` a summary uses. */
interface RevFacts {
  id: string;
  timestampUs: number;
  tags: string[];
  duration?: number;
  bytesWritten: number;
  trust: Trust;
  error?: string;
  verifiedAtUs?: number;
}

/** Stands for a `.rev` file that cannot be read (counted, otherwise ignored). */
const DAMAGED: RevFacts = {
  id: "",
  timestampUs: -Infinity,
  tags: [],
  bytesWritten: 0,
  trust: "distrusted",
};

/**
 * Job directories read at the same time. 2,000 jobs scanned at once only fill the I/O
 * thread pool and the heap (the peak stays as resident memory); a few at a time is as fast.
 */
const MAX_PARALLEL_SCANS = 16;
let scanning = 0;
const waiting: (() => void)[] = [];

async function limited<T>(fn: () => Promise<T>): Promise<T> {
  if (scanning < MAX_PARALLEL_SCANS) scanning++;
  else await new Promise<void>((resolve) => waiting.push(resolve));
  try {
    return await fn();
  } finally {
    const next = waiting.shift();
    if (next) next(); // hand the slot over
    else scanning--;
  }
}

/**
 * The facts of one `.rev` text. Plain files go through the fast reader; anything unusual,
 * and failed revisions (their error is needed), through the full parser. Corrupt files give
 * undefined: they never count (the job's own commands report them).
 */
function revisionFacts(text: string, file: string, id: string): RevFacts | undefined {
  const quick = quickRevision(text, id);
  if (quick && quick.trust !== "distrusted") return quick;
  try {
    const r = parseRevision(text, file, id);
    return {
      id: r.id,
      timestampUs: r.timestampUs,
      tags: r.tags,
      duration: r.stats.duration,
      bytesWritten: r.stats.bytes_written,
      trust: r.trust,
      error: r.error,
      verifiedAtUs: r.verifiedAtUs,
    };
  } catch {
    return undefined;
  }
}

async function readRevisions(dir: string): Promise<RevFacts[]> {
  const out: RevFacts[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const id = revisionIdOf(entry);
    if (!id) continue;
    const file = join(dir, entry.name);
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch {
      continue; // removed meanwhile
    }
    const facts = revisionFacts(text, file, id);
    out.push(facts ?? DAMAGED);
  }
  return out.sort(byHistory);
}

function readRevisionsSync(dir: string): RevFacts[] {
  const out: RevFacts[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const id = revisionIdOf(entry);
    if (!id) continue;
    const file = join(dir, entry.name);
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      continue;
    }
    const facts = revisionFacts(text, file, id);
    out.push(facts ?? DAMAGED);
  }
  return out.sort(byHistory);
}

function summarize(revisions: RevFacts[], mtimeMs: number): JobSummary {
  const lastByTag = new Map<string, number>();
  let newest: JobSummary["newest"];
  let completeCount = 0, distrustedCount = 0, storedBytes = 0;
  let oldestProven: number | undefined;
  const damagedCount = revisions.filter((r) => r === DAMAGED).length;
  revisions = revisions.filter((r) => r !== DAMAGED);
  for (const r of revisions) {
    if (typeof r.duration !== "number") continue;
    oldestProven = Math.min(oldestProven ?? Infinity, (r.verifiedAtUs ?? r.timestampUs) / 1e6);
    completeCount++;
    if (r.trust === "distrusted") distrustedCount++;
    storedBytes += r.bytesWritten;
    const t = r.timestampUs / 1e6;
    for (const tag of r.tags) lastByTag.set(tag, Math.max(lastByTag.get(tag) ?? -Infinity, t));
    newest = { time: t, tags: r.tags, duration: r.duration, bytes: r.bytesWritten };
  }
  const last = revisions.at(-1);
  const verificationFailed = last && typeof last.duration !== "number" &&
      last.trust === "distrusted"
    ? last.error ?? "verification failed"
    : undefined;
  return {
    lastByTag,
    newest,
    completeCount,
    distrustedCount,
    storedBytes,
    verificationFailed,
    oldestProven,
    damagedCount,
    mtimeMs,
  };
}

/** For the daemon: asynchronous I/O, a few directories at a time. */
export function summarizeJob(dir: string): Promise<JobSummary> {
  return limited(async () => {
    let mtimeMs: number;
    try {
      mtimeMs = (await Deno.stat(dir)).mtime?.getTime() ?? 0;
    } catch {
      return EMPTY_SUMMARY;
    }
    return summarize(await readRevisions(dir), mtimeMs);
  });
}

/**
 * The same, blocking: for one-shot commands (`plan`), where it takes half the time of
 * asynchronous I/O (each async file operation costs ~30 us of dispatch on the main thread).
 */
export function summarizeJobSync(dir: string): JobSummary {
  let mtimeMs: number;
  try {
    mtimeMs = Deno.statSync(dir).mtime?.getTime() ?? 0;
  } catch {
    return EMPTY_SUMMARY;
  }
  return summarize(readRevisionsSync(dir), mtimeMs);
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
