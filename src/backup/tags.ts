/**
 * Tags given by hand (issue: ad-hoc tags were expired silently): `backup` and `tags` refuse
 * tags that the job's schedule does not know unless they are `manual:` (never expired) or
 * the user insists with --force, because the next expiry would drop them and delete the
 * revision (design D10). The scheduler's own runs only use the schedule's tags.
 */
import { BackyError } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { jobSchedule } from "../repo/jobconfig.ts";
import { MANUAL_PREFIX, tagsExpiryDrops } from "../repo/retention.ts";
import { isComplete, type Revision } from "../repo/revision.ts";
import { resolveSpec } from "../repo/spec.ts";
import { storeFor } from "../store/store.ts";

const log = logger("tags");

/** Splits and checks a comma-separated tag list (no empty tags, no whitespace inside). */
export function parseTags(text: string): string[] {
  const list = [...new Set(text.split(",").map((t) => t.trim()))];
  if (list.some((t) => t === "")) throw new BackyError(`invalid tag list '${text}': empty tag`);
  const bad = list.find((t) => /[\s\p{Cc}]/u.test(t));
  if (bad !== undefined) throw new BackyError(`invalid tag '${bad}': no whitespace allowed`);
  return list;
}

/**
 * Refuses tags the next expiry would drop (unless `force`, which only warns). Jobs without
 * a schedule in their config (never run by the scheduler) are not expired: any tag is fine.
 */
export function checkTags(job: JobDir, tags: string[], force: boolean): void {
  const schedule = jobSchedule(job.config, JobDir.configPath(job.path));
  if (!schedule) return;
  const dropped = tagsExpiryDrops(tags, schedule);
  if (dropped.length === 0) return;
  const what = `tag${dropped.length > 1 ? "s" : ""} ${dropped.map((t) => `'${t}'`).join(", ")}`;
  if (!force) {
    throw new BackyError(
      `${what} not in the job's schedule (${Object.keys(schedule).join(", ")}): the next ` +
        `expiry would remove ${dropped.length > 1 ? "them" : "it"} and then the revision; ` +
        `use '${MANUAL_PREFIX}${dropped[0]}' to keep it until you remove the tag, or --force`,
    );
  }
  log.warning(`${what} not in the job's schedule: the next expiry removes them`, {
    tags: dropped.join(","),
  });
}

/** `backy tags -r SPEC add|remove|set TAGS`: the revision's new tags. */
export async function changeTags(
  job: JobDir,
  spec: string,
  action: string,
  tags: string[],
  force: boolean,
): Promise<Revision> {
  if (action !== "add" && action !== "remove" && action !== "set") {
    throw new BackyError(`unknown tags action '${action}' (expected add, remove or set)`);
  }
  const lock = await job.lockBackup();
  const claim = await storeFor(job).claim?.("tags").catch((e) => {
    lock.release();
    throw e;
  });
  try {
    const scan = await job.scan();
    for (const p of scan.problems) log.warning(p);
    const rev = resolveSpec(scan.revisions, spec, job.path);
    if (!isComplete(rev)) {
      throw new BackyError(`revision ${rev.id} is incomplete; only complete revisions are tagged`);
    }
    const next = action === "set"
      ? tags
      : action === "add"
      ? [...rev.tags, ...tags]
      : rev.tags.filter((t) => !tags.includes(t));
    if (action !== "remove") checkTags(job, tags, force);
    const before = rev.tags.join(",");
    rev.tags = [...new Set(next)].sort();
    if (rev.tags.length === 0) {
      log.warning("The revision has no tags left: the next expiry removes it (unless newest)", {
        id: rev.id,
      });
    }
    await job.writeRevision(rev, 0o440);
    await storeFor(job, rev.backend).publish?.(rev);
    log.info("Tags changed", { id: rev.id, before, after: rev.tags.join(",") });
    return rev;
  } finally {
    await claim?.release();
    lock.release();
  }
}
