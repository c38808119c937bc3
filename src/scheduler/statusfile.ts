/**
 * The scheduler's status file (spec 2.7): a YAML list, one mapping per job, rewritten
 * atomically every `status-interval`. `backy check` reads it. The keys of 2.1 come first and
 * keep their string form; backy 2.5's `sla_overdue` and the keys monitoring needs follow
 * (failures in a row, the last error, bytes, revisions, progress of a running backup).
 * Readable by the owner only, or by the owner and the `monitoring-group` (0640).
 */
import YAML from "yaml";
import { formatTimestamp } from "../util/format.ts";
import { atomicWrite } from "../util/fs.ts";
import type { JobStatus } from "../status/jobstatus.ts";
import { formatProgress } from "../status/progress.ts";

/** One job in the status file: strings as 2.1 wrote them, numbers for the newer counters. */
export interface StatusEntry {
  job: string;
  sla: string;
  status: string;
  last_time: string;
  last_tags: string;
  last_duration: string;
  next_time: string;
  next_tags: string;
  sla_overdue?: number;
  failures?: number;
  last_error?: string;
  last_failure?: string;
  last_success?: string;
  last_bytes?: number;
  revisions?: number;
  distrusted?: number;
  damaged_metadata?: number;
  oldest_verified?: string;
  stored_bytes?: number;
  running_since?: string;
  progress?: string;
  since?: string;
  problem?: string;
}

function time(seconds: number | undefined): string {
  return seconds === undefined ? "-" : formatTimestamp(new Date(Math.floor(seconds) * 1000));
}

/** The status file form of a job's status. */
export function statusEntry(s: JobStatus): StatusEntry {
  const e: StatusEntry = {
    job: s.job,
    sla: s.sla,
    status: s.status,
    last_time: time(s.lastTime),
    last_tags: s.lastTags.length ? s.lastTags.join(",") : "-",
    last_duration: s.lastDuration !== undefined ? `${s.lastDuration.toFixed(1)} s` : "-",
    next_time: time(s.nextTime),
    next_tags: s.nextTime !== undefined ? s.nextTags.join(",") : "-",
    sla_overdue: s.slaOverdue,
    failures: s.failures,
    last_error: s.lastError ?? "-",
    last_failure: time(s.lastFailure),
    last_success: time(s.lastSuccess),
    last_bytes: s.lastBytes ?? 0,
    revisions: s.revisions,
    distrusted: s.distrusted,
    damaged_metadata: s.damaged,
    oldest_verified: time(s.oldestVerified),
    stored_bytes: s.storedBytes,
    since: time(s.since),
  };
  if (s.runningSince !== undefined) e.running_since = time(s.runningSince);
  if (s.progress) e.progress = formatProgress(s.progress);
  if (s.problem) e.problem = s.problem;
  return e;
}

/** Plain YAML scalars that every reader takes as exactly this string. */
const PLAIN = /^[A-Za-z0-9_./(](?:[A-Za-z0-9_.,:/()+% -]*[A-Za-z0-9_.,/()+%-])?$/;
const NOT_A_STRING =
  /^(?:[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|0[xXoObB][0-9a-fA-F_]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)|null|Null|NULL|true|True|TRUE|false|False|FALSE|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|y|Y|n|N)$/;

/** A string as a YAML scalar: plain when unambiguous, else double-quoted (JSON is valid YAML). */
export function yamlString(value: string): string {
  if (PLAIN.test(value) && !NOT_A_STRING.test(value) && !/: | #|:$/.test(value)) return value;
  return JSON.stringify(value);
}

/** One entry as an item of the status list. */
function entryYaml(e: StatusEntry): string {
  let out = "";
  for (const [key, value] of Object.entries(e)) {
    if (value === undefined) continue;
    const text = typeof value === "number" ? String(value) : yamlString(String(value));
    out += `${out === "" ? "- " : "  "}${key}: ${text}\n`;
  }
  return out;
}

/**
 * The status file text: a YAML list of mappings, as `YAML.stringify` writes it for
 * ordinary values. Written by hand because the generic serializer takes ~150 ms for 2,000
 * jobs on every status interval.
 */
export function statusYaml(entries: StatusEntry[]): string {
  return entries.length === 0 ? "[]\n" : entries.map(entryYaml).join("");
}

/** A job's status with its status file form. */
export interface StatusItem {
  status: JobStatus;
  entry: StatusEntry;
  /** The entry as YAML list item. */
  yaml: string;
}

interface CachedItem extends StatusItem {
  version: number;
}

/** What a runner offers the status file writer. */
export interface StatusSource {
  /** Changes whenever anything in its status but the clock-driven SLA changes. */
  version: number;
}

const cache = new WeakMap<StatusSource, CachedItem>();

/**
 * The status item of `source`, reused while nothing it shows has changed: the daemon
 * rewrites the status of every job every few seconds, and for thousands of jobs building it
 * anew each time was most of the garbage the idle daemon made. `build` is only called when
 * the runner's version changed, the SLA flipped, or the job is running or overdue (their
 * entries change with the clock).
 */
export function statusItem(
  source: StatusSource,
  slaOk: boolean,
  build: () => JobStatus,
): StatusItem {
  const c = cache.get(source);
  if (
    c && c.version === source.version && (c.entry.sla === "OK") === slaOk && slaOk &&
    c.status.runningSince === undefined
  ) {
    return c;
  }
  const status = build();
  const entry = statusEntry(status);
  const item = { status, entry, yaml: entryYaml(entry), version: source.version };
  cache.set(source, item);
  return item;
}

/** Writes the file atomically with `mode` (and group `gid` when given). */
export async function writeStatusFile(
  path: string,
  items: StatusItem[],
  mode = 0o600,
  gid?: number,
): Promise<void> {
  await atomicWrite(path, items.length ? items.map((i) => i.yaml).join("") : "[]\n", mode);
  if (gid !== undefined) await Deno.chown(path, null, gid);
}

/** What a restarted scheduler takes over from the status file the previous one left. */
export interface PreviousState {
  failures: number;
  lastError?: string;
  lastFailure?: number;
  since?: number;
}

/** `YYYY-MM-DD HH:MM:SS UTC` back to Unix seconds; undefined for `-` or anything else. */
export function parseStatusTime(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) UTC$/.exec(value);
  if (!m) return undefined;
  const t = Date.parse(`${m[1]}T${m[2]}Z`);
  return Number.isNaN(t) ? undefined : t / 1000;
}

/**
 * Per job, the failure record and first-seen time from a status file's text. Anything
 * unreadable is skipped: this only spares a restarted scheduler from forgetting failures.
 */
export function previousState(text: string): Map<string, PreviousState> {
  const out = new Map<string, PreviousState>();
  let data: unknown;
  try {
    data = YAML.parse(text);
  } catch {
    return out;
  }
  if (!Array.isArray(data)) return out;
  for (const e of data) {
    if (e === null || typeof e !== "object" || typeof e.job !== "string") continue;
    const failures = Number.isInteger(e.failures) && e.failures > 0 ? e.failures as number : 0;
    const state: PreviousState = { failures };
    if (failures > 0 && typeof e.last_error === "string" && e.last_error !== "-") {
      state.lastError = e.last_error;
    }
    if (failures > 0) state.lastFailure = parseStatusTime(e.last_failure);
    state.since = parseStatusTime(e.since);
    out.set(e.job, state);
  }
  return out;
}
