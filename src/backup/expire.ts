/**
 * `backy expire`: retention (design D10) on one job directory, using the schedule the
 * scheduler copied into the job's config, then garbage collection of unreferenced chunks.
 */
import { BackyError } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { parseDuration } from "../config/duration.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete } from "../repo/revision.ts";
import { expire as planExpiry, type Schedule } from "../repo/retention.ts";
import { type GcResult, storeFor } from "../store/store.ts";

const log = logger("expire");

export function jobSchedule(job: JobDir): Schedule {
  const raw = job.config.schedule;
  if (!raw || Object.keys(raw).length === 0) {
    throw new BackyError(
      `${job.path}/config has no schedule: the scheduler writes it before each run; nothing to expire`,
    );
  }
  const schedule: Schedule = {};
  for (const [tag, def] of Object.entries(raw)) {
    const interval = parseDuration(def?.interval as string | number);
    const keep = Number(def?.keep);
    if (interval === undefined || !Number.isInteger(keep) || keep < 1) {
      throw new BackyError(`${job.path}/config: invalid schedule entry for tag '${tag}'`);
    }
    schedule[tag] = { interval, keep };
  }
  return schedule;
}

export interface ExpireResult {
  retagged: number;
  removed: string[];
  gc?: GcResult;
}

export async function expireJob(job: JobDir, now = Date.now() / 1000): Promise<ExpireResult> {
  const schedule = jobSchedule(job);
  const lock = await job.lockBackup();
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.warning(p);
    const complete = scan.revisions.filter(isComplete);
    const plan = planExpiry(
      complete.map((r) => ({ id: r.id, timestamp: r.timestampUs / 1e6, tags: r.tags })),
      schedule,
      now,
    );
    for (const [id, tags] of plan.retag) {
      const rev = complete.find((r) => r.id === id)!;
      log.info("Expiring tags", {
        id,
        removed: rev.tags.filter((t) => !tags.includes(t)).join(","),
      });
      rev.tags = tags;
      await job.writeRevision(rev, 0o440);
    }
    const result: ExpireResult = { retagged: plan.retag.size, removed: [] };
    const store = storeFor(job);
    if (plan.remove.length === 0 && !store.collectsGarbage) return result;
    let purge;
    try {
      purge = await job.lockPurge();
    } catch (e) {
      log.warning("Not removing data now", { reason: (e as Error).message });
      return result;
    }
    try {
      for (const id of plan.remove) {
        log.info("Removing expired revision", { id });
        await storeFor(job, complete.find((r) => r.id === id)!.backend).removeRevision(id);
        result.removed.push(id);
      }
      if (store.collectsGarbage) {
        result.gc = await store.collectGarbage();
        log.info("Chunk store cleaned", { ...result.gc });
      }
    } finally {
      purge.release();
    }
    return result;
  } finally {
    lock.release();
  }
}
