/**
 * The scheduler's status file (spec 2.7): a YAML list, one mapping of strings per job,
 * rewritten atomically. `backy check` reads it. Extra key beyond 2.1: `problem`, set when
 * the job's newest backup failed its verification.
 */
import { formatTimestamp } from "../util/format.ts";
import { atomicWrite } from "../util/fs.ts";
import type { JobRunner } from "./jobrunner.ts";

export interface StatusEntry {
  job: string;
  sla: string;
  status: string;
  last_time: string;
  last_tags: string;
  last_duration: string;
  next_time: string;
  next_tags: string;
  problem?: string;
}

export function statusEntry(r: JobRunner, now: number): StatusEntry {
  const s = r.summary;
  const e: StatusEntry = {
    job: r.name,
    sla: r.slaOk(now) ? "OK" : "TOO OLD",
    status: r.status,
    last_time: s.newest ? formatTimestamp(new Date(s.newest.time * 1000)) : "-",
    last_tags: s.newest ? r.sortedTags(s.newest.tags).join(",") : "-",
    last_duration: s.newest?.duration !== undefined ? `${s.newest.duration.toFixed(1)} s` : "-",
    next_time: r.next ? formatTimestamp(new Date(r.next.time * 1000)) : "-",
    next_tags: r.next ? r.next.tags.join(",") : "-",
  };
  if (s.verificationFailed) e.problem = `verification failed: ${s.verificationFailed}`;
  return e;
}

/** Plain YAML scalars that every reader takes as exactly this string. */
const PLAIN = /^[A-Za-z0-9_./(](?:[A-Za-z0-9_.,:/()+ -]*[A-Za-z0-9_.,/()+-])?$/;
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
    out += `${out === "" ? "- " : "  "}${key}: ${yamlString(String(value))}\n`;
  }
  return out;
}

/**
 * The status file text: a YAML list of string mappings, as `YAML.stringify` writes it for
 * ordinary values. Written by hand because the generic serializer takes ~150 ms for 2,000
 * jobs on every status interval.
 */
export function statusYaml(entries: StatusEntry[]): string {
  return entries.length === 0 ? "[]\n" : entries.map(entryYaml).join("");
}

export interface StatusItem {
  entry: StatusEntry;
  /** The entry as YAML list item. */
  yaml: string;
}

interface CachedItem extends StatusItem {
  summary: JobRunner["summary"];
  next: JobRunner["next"];
  status: string;
}

const cache = new WeakMap<JobRunner, CachedItem>();

/**
 * statusEntry with its YAML, reused while nothing it shows has changed: the daemon rewrites
 * the status of every job every few seconds, and for thousands of jobs building it anew each
 * time was most of the garbage the idle daemon made. Summaries and planned runs are replaced,
 * never mutated, so identity tells whether they changed.
 */
export function statusItem(r: JobRunner, now: number): StatusItem {
  const sla = r.slaOk(now) ? "OK" : "TOO OLD";
  const c = cache.get(r);
  if (
    c && c.summary === r.summary && c.next === r.next && c.status === r.status &&
    c.entry.sla === sla
  ) {
    return c;
  }
  const entry = statusEntry(r, now);
  const item = {
    entry,
    yaml: entryYaml(entry),
    summary: r.summary,
    next: r.next,
    status: r.status,
  };
  cache.set(r, item);
  return item;
}

export async function writeStatusFile(path: string, items: StatusItem[]): Promise<void> {
  await atomicWrite(path, items.length ? items.map((i) => i.yaml).join("") : "[]\n", 0o644);
}
