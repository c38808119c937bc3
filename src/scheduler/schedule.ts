/**
 * Pure scheduling maths (spec 4.3-4.8, 5; design D9, D10): spreads, slots, catch-up,
 * backoff, retention and the SLA rule. No I/O and no clock: callers pass `now`.
 * Times are Unix seconds, intervals whole seconds.
 */
import { createHash } from "node:crypto";
import { MT19937 } from "./mt19937.ts";
import type { Schedule } from "../repo/retention.ts";

export { expire, MANUAL_PREFIX, type RevisionInfo, type Schedule } from "../repo/retention.ts";

/** Unix seconds of 0001-01-01T00:00:00Z (Python `datetime.min`), where slots are anchored. */
export const EPOCH_0001 = -62135596800;

/** A catch-up run is skipped when the regular slot is at most this far away (spec 4.5). */
export const CATCHUP_GRACE = 300;

/** Backoff after failures: 2^n minutes, at most this many seconds (6 h; spec 4.6). */
export const MAX_BACKOFF = 21600;

/**
 * Deterministic per-job offset in [0, limit], computed exactly like backy 2.x in Python
 * (MD5 of the name seeding `random.seed`, then `randint`) so existing installations keep
 * their backup times.
 */
export function spread(jobName: string, limit: number): number {
  const digest = createHash("md5").update(jobName, "utf8").digest("hex");
  const rng = MT19937.fromPythonIntSeed(BigInt("0x" + digest));
  return rng.randint(0, limit);
}

/** Largest interval of the schedule; 0 for an empty schedule (spread limit 0). */
export function longestInterval(s: Schedule): number {
  let max = 0;
  for (const { interval } of Object.values(s)) max = Math.max(max, interval);
  return max;
}

/** Smallest interval of the schedule; 0 for an empty schedule. */
export function smallestInterval(s: Schedule): number {
  const intervals = Object.values(s).map((t) => t.interval);
  return intervals.length === 0 ? 0 : Math.min(...intervals);
}

/** First slot strictly after `now`: slots are `k * interval + spread mod interval` after 0001-01-01. */
export function nextInInterval(now: number, interval: number, spread: number): number {
  if (!(interval > 0)) throw new RangeError(`interval must be positive, got ${interval}`);
  const s = ((spread % interval) + interval) % interval;
  const t = now - EPOCH_0001;
  const k = Math.floor((t - s) / interval);
  return (k + 1) * interval + s + EPOCH_0001;
}

/** Earliest regular slot after `now` and every tag whose slot falls on exactly that time. */
export function nextIdeal(
  now: number,
  schedule: Schedule,
  spread: number,
): { time: number; tags: string[] } {
  let time = Infinity;
  let tags: string[] = [];
  for (const [tag, { interval }] of Object.entries(schedule)) {
    const t = nextInInterval(now, interval, spread);
    if (t < time) {
      time = t;
      tags = [tag];
    } else if (t === time) {
      tags.push(tag);
    }
  }
  if (tags.length === 0) throw new RangeError("schedule defines no tags");
  return { time, tags: sortedTags(tags, schedule) };
}

/**
 * When to run next and with which tags (D9, spec 4.5 "2.2+ semantics").
 *
 * A tag is missed when its newest complete revision (`lastByTag`) is not within the last
 * interval, i.e. `last <= now - interval`, or it was never seen. The result is the ideal
 * slot carrying its tags plus the missed ones; but if something was missed and that slot is
 * more than CATCHUP_GRACE seconds away, the missed tags run now instead.
 *
 * Deliberate difference to backy 2.2+: an empty history is not exempt from catch-up, so a
 * new job gets its first backup at once (with all tags) instead of waiting up to a whole
 * interval. It still waits when its first regular slot is within the grace period, which
 * avoids two backups minutes apart.
 */
export function nextRun(
  now: number,
  schedule: Schedule,
  spread: number,
  lastByTag: Map<string, number>,
  historyEmpty: boolean,
): { time: number; tags: string[] } {
  const ideal = nextIdeal(now, schedule, spread);
  const missed: string[] = [];
  for (const [tag, { interval }] of Object.entries(schedule)) {
    const last = historyEmpty ? undefined : lastByTag.get(tag);
    if (last === undefined || last <= now - interval) missed.push(tag);
  }
  if (missed.length > 0 && ideal.time > now + CATCHUP_GRACE) {
    return { time: now, tags: sortedTags(missed, schedule) };
  }
  return { time: ideal.time, tags: sortedTags([...ideal.tags, ...missed], schedule) };
}

/** Delay before the next attempt after n consecutive failures: 2^n minutes, capped at 6 h. */
export function backoffSeconds(consecutiveFailures: number): number {
  const n = Math.floor(consecutiveFailures);
  if (!(n > 0)) return 0;
  // 2 ** n is Infinity for huge n, which min() still caps.
  return Math.min(2 ** n * 60, MAX_BACKOFF);
}

/** Distinct tags by interval ascending (unknown tags count as 0, so first), then by name. */
export function sortedTags(tags: Iterable<string>, schedule: Schedule): string[] {
  const interval = (t: string) => Object.hasOwn(schedule, t) ? schedule[t].interval : 0;
  return [...new Set(tags)].sort((a, b) =>
    interval(a) - interval(b) || (a < b ? -1 : a > b ? 1 : 0)
  );
}

/**
 * SLA (spec 5): the newest complete revision may be at most 1.5 x the smallest interval old
 * (exactly 1.5 x is fine). No revision yet counts as OK (new jobs are not alarmed), and an
 * empty schedule promises nothing.
 */
export function slaOk(
  now: number,
  newestComplete: number | undefined,
  schedule: Schedule,
): boolean {
  if (newestComplete === undefined) return true;
  if (Object.keys(schedule).length === 0) return true;
  return now - newestComplete <= 1.5 * smallestInterval(schedule);
}
