/**
 * Retention (design D10, spec 4.8), pure: which tags revisions keep and which revisions
 * go, given the job's schedule. Used by `backy expire` and the scheduler.
 */

/** tag -> interval (seconds) and how many revisions carrying the tag to keep. */
export type Schedule = Record<string, { interval: number; keep: number }>;

/** Tags with this prefix were made by hand and are never expired (D10). */
export const MANUAL_PREFIX = "manual:";

/** Tags that the next expiry would drop: neither in the schedule nor `manual:`. */
export function tagsExpiryDrops(tags: string[], schedule: Schedule): string[] {
  return tags.filter((t) => !Object.hasOwn(schedule, t) && !t.startsWith(MANUAL_PREFIX));
}

export interface RevisionInfo {
  id: string;
  timestamp: number;
  tags: string[];
}

/**
 * Retention (D10, spec 4.8 with the 2.5 rule for foreign tags). For each schedule tag T:
 * of the revisions carrying T, newest first, the first `keep` keep T, as does any revision
 * not older than `now - keep * interval`; the rest lose T. Tags the schedule does not define
 * are dropped unless prefixed `manual:`. Revisions left without tags are removed.
 *
 * `revisions` are the complete revisions in any order. Returns the surviving revisions whose
 * tag set changed (with their new tags, in their original order) and the ids to delete,
 * newest first.
 */
export function expire(
  revisions: RevisionInfo[],
  schedule: Schedule,
  now: number,
): { retag: Map<string, string[]>; remove: string[] } {
  // Newest first; ties broken by id so the outcome does not depend on input order.
  const byAge = [...revisions].sort((a, b) =>
    b.timestamp - a.timestamp || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
  );
  const kept = new Map<RevisionInfo, Set<string>>(
    byAge.map((r) => [
      r,
      new Set(
        r.tags.filter((t) => Object.hasOwn(schedule, t) || t.startsWith(MANUAL_PREFIX)),
      ),
    ]),
  );

  for (const [tag, { interval, keep }] of Object.entries(schedule)) {
    const threshold = now - keep * interval;
    let seen = 0;
    for (const r of byAge) {
      if (!r.tags.includes(tag)) continue;
      seen++;
      if (seen > keep && r.timestamp < threshold) kept.get(r)!.delete(tag);
    }
  }

  const retag = new Map<string, string[]>();
  const remove: string[] = [];
  byAge.forEach((r, index) => {
    const tags = kept.get(r)!;
    // The newest revision is never deleted: after a tag rename (or a schedule change that
    // drops every tag it carries) expiry must not wipe a job's most recent backup. It may
    // lose its tags; the next backup supersedes it and a later run removes it.
    if (tags.size === 0 && index !== 0) {
      remove.push(r.id);
      return;
    }
    const oldTags = [...new Set(r.tags)];
    const newTags = oldTags.filter((t) => tags.has(t));
    if (newTags.length !== oldTags.length) retag.set(r.id, newTags);
  });
  return { retag, remove };
}
