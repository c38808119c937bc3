/**
 * `backy expire`: retention (design D10) on one job directory, using the schedule the
 * scheduler copied into the job's config, then garbage collection of unreferenced chunks.
 */
import { BackyError } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { jobSchedule } from "../repo/jobconfig.ts";
import { isComplete } from "../repo/revision.ts";
import { expire as planExpiry } from "../repo/retention.ts";
import { type GcResult, storeFor } from "../store/store.ts";

const log = logger("expire");

export interface ExpireResult {
  retagged: number;
  /** Revision -> the tags it loses (a dry run changes nothing). */
  untagged: Map<string, string[]>;
  removed: string[];
  gc?: GcResult;
}

export async function expireJob(
  job: JobDir,
  now = Date.now() / 1000,
  opts: { dryRun?: boolean } = {},
): Promise<ExpireResult> {
  const schedule = jobSchedule(job.config, JobDir.configPath(job.path));
  if (!schedule) {
    throw new BackyError(
      `${job.path}/config has no schedule: the scheduler writes it before each run; nothing to expire`,
    );
  }
  const lock = await job.lockBackup();
  const jobStore = storeFor(job);
  const claim = opts.dryRun ? undefined : await jobStore.claim?.("expire").catch((e) => {
    lock.release();
    throw e;
  });
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.warning(p);
    const complete = scan.revisions.filter(isComplete);
    const plan = planExpiry(
      complete.map((r) => ({ id: r.id, timestamp: r.timestampUs / 1e6, tags: r.tags })),
      schedule,
      now,
    );
    const untagged = new Map<string, string[]>();
    for (const [id, tags] of plan.retag) {
      const rev = complete.find((r) => r.id === id)!;
      untagged.set(id, rev.tags.filter((t) => !tags.includes(t)));
    }
    if (opts.dryRun) {
      return { retagged: plan.retag.size, untagged, removed: [...plan.remove] };
    }
    for (const [id, tags] of plan.retag) {
      const rev = complete.find((r) => r.id === id)!;
      log.info("Expiring tags", { id, removed: untagged.get(id)!.join(",") });
      rev.tags = tags;
      await job.writeRevision(rev, 0o440);
      await storeFor(job, rev.backend).publish?.(rev);
    }
    const result: ExpireResult = { retagged: plan.retag.size, untagged, removed: [] };
    const store = jobStore;
    let purge;
    try {
      purge = await job.lockPurge();
    } catch (e) {
      // A restore or mount reads: data stays until the next expiry.
      if (plan.remove.length) {
        log.warning("Not removing data now", { reason: (e as Error).message });
      }
      return result;
    }
    try {
      for (const id of plan.remove) {
        log.info("Removing expired revision", { id });
        await storeFor(job, complete.find((r) => r.id === id)!.backend).removeRevision(id);
        result.removed.push(id);
      }
      await job.removeLeftovers();
      result.gc = await store.collectGarbage();
      log.info("Store cleaned", { ...result.gc });
    } finally {
      purge.release();
    }
    return result;
  } finally {
    await claim?.release();
    lock.release();
  }
}
