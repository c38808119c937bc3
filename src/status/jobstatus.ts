/**
 * One job's state as the scheduler reports it: the same snapshot feeds the status file, the
 * telnet shell, the HTTP API and the metrics, so they never disagree. Pure: built from plain
 * values, no clock and no I/O.
 */
import type { Progress } from "./progress.ts";

/** What the job is doing now; `failing` = its last run failed and it waits for a retry. */
export type JobState =
  | ""
  | "waiting"
  | "waiting for worker slot"
  | "running"
  | "failing"
  | "stopped";

/** Everything known about one job at one moment. Times are Unix seconds. */
export interface JobStatus {
  job: string;
  /** 2.1's SLA rule: newest complete revision at most 1.5 x the smallest interval old. */
  sla: "OK" | "TOO OLD";
  /** Age of the newest complete revision while the SLA is violated, else 0 (as backy 2.5). */
  slaOverdue: number;
  status: JobState;
  /** Timestamp (start) of the newest complete revision. */
  lastTime?: number;
  /** Its tags, sorted by interval. */
  lastTags: string[];
  lastDuration?: number;
  /** Its `bytes_written`. */
  lastBytes?: number;
  /** When the newest complete revision was finished (its start plus its duration). */
  lastSuccess?: number;
  nextTime?: number;
  nextTags: string[];
  /** Scheduled runs that failed in a row (0 after a success). */
  failures: number;
  /** The last failed run's reason, one line. */
  lastError?: string;
  /** When the last failed run started. */
  lastFailure?: number;
  /** Complete revisions. */
  revisions: number;
  /** Complete revisions marked distrusted. */
  distrusted: number;
  /** `.rev` files that cannot be read (damaged metadata). */
  damaged: number;
  /** When the least recently proven complete revision was last proven (scrub or backup). */
  oldestVerified?: number;
  /** Sum of bytes written by the complete revisions (what `backy status` estimates). */
  storedBytes: number;
  /** Set when the newest revision failed its verification. */
  problem?: string;
  /** When the running backup started. */
  runningSince?: number;
  /** Live progress of the running backup. */
  progress?: Progress;
  /** When this scheduler first knew the job (kept across restarts through the status file). */
  since: number;
}

/** The longest error text kept: enough for a path and a reason, short enough for a table. */
export const MAX_ERROR_LENGTH = 400;

/**
 * One line of printable text: control characters (a child's multi-line output, terminal
 * escapes) become spaces, runs of blanks collapse, and overlong text is cut with "...".
 */
export function oneLine(text: string, max = MAX_ERROR_LENGTH): string {
  // deno-lint-ignore no-control-regex
  const flat = text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]+/g, " ").replace(/ {2,}/g, " ")
    .trim();
  return flat.length > max ? `${flat.slice(0, max - 3)}...` : flat;
}

/** Reported state: a failed job waiting for its retry is `failing`, not just `waiting`. */
export function reportedState(runner: JobState, failures: number): JobState {
  if (failures > 0 && (runner === "waiting" || runner === "")) return "failing";
  return runner;
}

function iso(seconds: number | undefined): string | null {
  return seconds === undefined ? null : new Date(Math.round(seconds * 1000)).toISOString();
}

/** The JSON form (HTTP API, `check --json`): snake_case keys as in the status file, ISO times. */
export function jobJson(s: JobStatus): Record<string, unknown> {
  return {
    job: s.job,
    sla: s.sla,
    sla_overdue: s.slaOverdue,
    status: s.status,
    last_time: iso(s.lastTime),
    last_tags: s.lastTags,
    last_duration: s.lastDuration ?? null,
    last_bytes: s.lastBytes ?? null,
    last_success: iso(s.lastSuccess),
    next_time: iso(s.nextTime),
    next_tags: s.nextTags,
    failures: s.failures,
    last_error: s.lastError ?? null,
    last_failure: iso(s.lastFailure),
    revisions: s.revisions,
    distrusted: s.distrusted,
    damaged_metadata: s.damaged,
    oldest_verified: iso(s.oldestVerified),
    stored_bytes: s.storedBytes,
    problem: s.problem ?? null,
    running_since: iso(s.runningSince),
    progress: s.progress
      ? {
        phase: s.progress.phase,
        done: s.progress.done,
        total: s.progress.total,
        rate: s.progress.rate,
        eta: s.progress.eta,
        updated: iso(s.progress.updated),
      }
      : null,
    since: iso(s.since),
  };
}
