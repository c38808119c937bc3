/**
 * The scheduler's status file (spec 2.7): a YAML list, one mapping of strings per job,
 * rewritten atomically. `backy check` reads it. Extra key beyond 2.1: `problem`, set when
 * the job's newest backup failed its verification.
 */
import YAML from "yaml";
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

export async function writeStatusFile(path: string, entries: StatusEntry[]): Promise<void> {
  await atomicWrite(path, YAML.stringify(entries), 0o644);
}
