/**
 * `backy verify` (issue 9): re-reads the stored data of revisions and checks every block
 * against its index, records the result in the revision (`trust`, `verified_at`, `damage`),
 * and moves damaged chunks aside so the next backup stores them anew. Revisions that share
 * chunks (chunked) cost one read per chunk per run. As a scrub (`--scrub`, what the
 * scheduler runs daily), it takes the revisions whose last verification is oldest first and
 * stops at a byte budget, so that every stored block is read at least once per period. The
 * budget holds within a revision too: a revision larger than one run's budget is read in
 * parts, and `.scrub-cursor` says where the next run goes on.
 */
import { join } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { atomicWrite, removeIfExists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { BLOCK_SIZE, hex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete, type Revision } from "../repo/revision.ts";
import { resolveSpec } from "../repo/spec.ts";
import { storeFor } from "../store/store.ts";
import { WorkerPool } from "./pool.ts";
import { type Progress, startProgress } from "../util/progress.ts";
import { damagedBlocks, describe, type Mismatch, sampleIndices } from "./verify.ts";
import { pipeline } from "./pool.ts";

const log = logger("verify");

export interface VerifyOptions {
  /** A revision spec, or all complete revisions. */
  spec?: string;
  all?: boolean;
  /** Check this percentage of each revision's data blocks, chosen at random. */
  samplePct?: number;
  /** Scrub: stalest first, until `maxBytes` (default: enough to cover `period` daily). */
  scrub?: { period: number; maxBytes?: number };
  now?: number;
}

export interface RevisionVerdict {
  id: string;
  /** Blocks read (shared chunks already checked in this run are not read again). */
  checked: number;
  bytes: number;
  damage: string[];
  /** Why it could not be checked at all (e.g. a 2.x revision without index). */
  skipped?: string;
  /** Blocks from..next were checked (a scrub's part); `next` is where the next run goes on. */
  part?: { from: number; next?: number; count: number };
}

/** Where a scrub stopped inside a revision, and when it started reading that revision. */
interface Cursor {
  id: string;
  next: number;
  /** Microseconds: a revision read in parts counts as verified when its first part was. */
  sinceUs: number;
}

const CURSOR_FILE = ".scrub-cursor";

async function readCursor(job: JobDir): Promise<Cursor | undefined> {
  let text;
  try {
    text = await Deno.readTextFile(join(job.path, CURSOR_FILE));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    const c = JSON.parse(text);
    if (
      typeof c.id === "string" && Number.isSafeInteger(c.next) && c.next > 0 &&
      Number.isSafeInteger(c.sinceUs)
    ) return { id: c.id, next: c.next, sinceUs: c.sinceUs };
  } catch { /* reported below */ }
  // Costs at most one revision read again from its start.
  log.warning(`Ignoring a damaged ${CURSOR_FILE}; the scrub starts afresh`);
  return undefined;
}

export interface VerifyResult {
  revisions: RevisionVerdict[];
  /** Unreadable `.rev` files: damaged metadata. */
  problems: string[];
  bytes: number;
  /** Scrub: revisions not verified within the period, after this run. */
  overdue: number;
}

/** The revision's size in bytes as far as the metadata says (for the scrub budget). */
function sizeOf(rev: Revision): number {
  const blocks = rev.stats.blocks as { changed?: number; unchanged?: number } | undefined;
  if (blocks) return ((blocks.changed ?? 0) + (blocks.unchanged ?? 0)) * BLOCK_SIZE;
  return Number(rev.stats.bytes_written) || BLOCK_SIZE;
}

/** When a revision was last proven: its verification, else its backup. */
function provenAt(rev: Revision): number {
  return (rev.verifiedAtUs ?? rev.timestampUs) / 1e6;
}

export async function verify(job: JobDir, opts: VerifyOptions): Promise<VerifyResult> {
  const lock = await job.lockBackup();
  const readLock = await job.lockRead();
  // A remote store (s3) holds the job while this run records its verdicts.
  const claim = await storeFor(job).claim?.("verify").catch((e) => {
    readLock.release();
    lock.release();
    throw e;
  });
  const pool = new WorkerPool();
  const now = opts.now ?? Date.now() / 1000;
  const progress = startProgress({
    command: "verify",
    phase: "verifying",
    total: 0,
    jobDir: job.path,
  });
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.error(`Damaged metadata: ${p}`);
    const complete = scan.revisions.filter(isComplete);
    let chosen: Revision[];
    let budget = Infinity;
    let cursor: Cursor | undefined;
    if (opts.scrub) {
      chosen = [...complete].sort((a, b) => provenAt(a) - provenAt(b));
      // A revision begun by an earlier run goes first, from where that run stopped.
      cursor = await readCursor(job);
      const resumed = cursor && chosen.findIndex((r) => r.id === cursor!.id);
      if (cursor && resumed !== undefined && resumed >= 0) {
        chosen.unshift(...chosen.splice(resumed, 1));
      } else cursor = undefined;
      const total = complete.reduce((sum, r) => sum + sizeOf(r), 0);
      const days = Math.max(1, opts.scrub.period / 86400);
      budget = opts.scrub.maxBytes ?? Math.max(Math.ceil((2 * total) / days), BLOCK_SIZE);
    } else if (opts.all) chosen = complete;
    else chosen = [resolveSpec(scan.revisions, opts.spec ?? "latest", job.path)];

    progress.setPhase("verifying", chosen.reduce((sum, r) => sum + sizeOf(r), 0));
    const seen = new Map<string, string | null>(); // chunk digest -> damage reason or null
    const result: VerifyResult = { revisions: [], problems: scan.problems, bytes: 0, overdue: 0 };
    for (const rev of chosen) {
      if (result.bytes >= budget) break;
      const from = cursor?.id === rev.id ? cursor.next : 0;
      // Verified recently: today (a quarter of a short period). A fresh backup is read by
      // its first scrub, whatever its age.
      const recent = Math.min(86400, (opts.scrub?.period ?? 0) / 4);
      if (
        opts.scrub && !from && rev.verifiedAtUs !== undefined &&
        now - rev.verifiedAtUs / 1e6 < recent
      ) continue;
      const verdict = await verifyRevision(job, rev, pool, seen, progress, {
        samplePct: opts.samplePct,
        from,
        budget: budget - result.bytes,
      });
      result.revisions.push(verdict);
      result.bytes += verdict.bytes;
      const next = verdict.part?.next;
      if (next !== undefined) {
        const sinceUs = from ? cursor!.sinceUs : Math.round(now * 1e6);
        await atomicWrite(
          join(job.path, CURSOR_FILE),
          JSON.stringify({ id: rev.id, next, sinceUs }) + "\n",
          0o600,
        );
        await record(job, rev, verdict, false, now); // damage now; proven when whole
        break;
      }
      const provenUs = from ? cursor!.sinceUs : Math.round(now * 1e6);
      // Damage an earlier part found stays until a whole read finds none.
      const whole = !opts.samplePct && !(from && rev.trust === "distrusted");
      await record(job, rev, verdict, whole, provenUs / 1e6);
      if (from) await removeIfExists(join(job.path, CURSOR_FILE));
    }
    if (opts.scrub) {
      const fresh = (await job.scan()).revisions.filter(isComplete);
      result.overdue = fresh.filter((r) => now - provenAt(r) > opts.scrub!.period).length;
    }
    return result;
  } finally {
    progress.finish();
    pool.terminate();
    await claim?.release();
    readLock.release();
    lock.release();
  }
}

async function verifyRevision(
  job: JobDir,
  rev: Revision,
  pool: WorkerPool,
  seen: Map<string, string | null>,
  progress: Progress,
  range: { samplePct?: number; from: number; budget: number },
): Promise<RevisionVerdict> {
  const { samplePct, from, budget } = range;
  const store = storeFor(job, rev.backend);
  const verdict: RevisionVerdict = { id: rev.id, checked: 0, bytes: 0, damage: [] };
  let data;
  try {
    data = await store.open(rev);
  } catch (e) {
    verdict.damage.push(errorMessage(e));
    return verdict;
  }
  const index = data.index;
  if (!index) {
    verdict.skipped = "no index (a backy 2.x revision): its blocks cannot be checked";
    return verdict;
  }
  let blocks = [...Array(index.count).keys()];
  if (samplePct !== undefined) {
    const withData = blocks.filter((i) => !index.isZero(i));
    const k = Math.max(1, Math.ceil((withData.length * samplePct) / 100));
    blocks = sampleIndices(withData.length, Math.min(k, withData.length)).map((j) => withData[j])
      .sort((a, b) => a - b);
  }
  if (from || budget < Infinity) {
    blocks = blocks.filter((i) => i >= from);
  }
  const bad: Mismatch[] = [];
  const toRead: number[] = [];
  let planned = 0;
  let next: number | undefined;
  for (const i of blocks) {
    // The budget holds to within one block: the rest is the next run's.
    if (planned >= budget) {
      next = i;
      break;
    }
    if (store.sharedBlocks && !index.isZero(i)) {
      const key = hex(index.digest(i));
      if (seen.has(key)) {
        const reason = seen.get(key);
        if (reason) bad.push({ block: i, reason });
        continue;
      }
      seen.set(key, null); // claimed: its check below fills in the reason
    }
    toRead.push(i);
    planned += index.blockLength(i);
  }
  if (from || next !== undefined) verdict.part = { from, next, count: index.count };
  await pipeline(toRead.length, pool.size * 3, (k) => {
    const i = toRead[k];
    return pool.check({
      offset: i * BLOCK_SIZE,
      length: index.blockLength(i),
      store: data.ref,
      digest: index.isZero(i) ? null : index.digest(i).slice(),
    }).catch((e) => ({ ok: false, reason: errorMessage(e) }));
  }, (k, r) => {
    const i = toRead[k];
    verdict.checked++;
    verdict.bytes += index.blockLength(i);
    progress.advance(index.blockLength(i));
    if (r.ok) return;
    const reason = r.reason ?? "does not match";
    bad.push({ block: i, reason });
    if (store.sharedBlocks && !index.isZero(i)) seen.set(hex(index.digest(i)), reason);
  });
  await pool.closeFiles();
  bad.sort((a, b) => a.block - b.block);
  verdict.damage = bad.map(describe);
  if (bad.length) {
    const moved = await store.quarantine(damagedBlocks(index, bad));
    if (moved.length) {
      log.warning("Moved damaged chunks aside; the next backup stores them anew", {
        id: rev.id,
        chunks: moved.length,
      });
    }
  }
  return verdict;
}

/** Writes the verdict into the revision: verified (whole, clean), or distrusted. */
async function record(
  job: JobDir,
  rev: Revision,
  verdict: RevisionVerdict,
  whole: boolean,
  now: number,
): Promise<void> {
  if (verdict.skipped) return;
  if (verdict.damage.length) {
    rev.trust = "distrusted";
    rev.damage = verdict.damage.slice(0, 20);
    log.error("Revision damaged", {
      id: rev.id,
      blocks: verdict.damage.length,
      first: verdict.damage[0],
    });
  } else if (whole) {
    // Healed since (a chunk stored anew) or never damaged: trusted again.
    rev.trust = "verified";
    rev.verifiedAtUs = Math.round(now * 1e6);
    delete rev.damage;
  } else return;
  try {
    await job.writeRevision(rev, 0o440);
    await storeFor(job, rev.backend).publish?.(rev);
  } catch (e) {
    throw new BackyError(`cannot record the verification of ${rev.id}: ${errorMessage(e)}`);
  }
}
