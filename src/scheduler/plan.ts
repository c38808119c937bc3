/** `backy plan`: the next N runs per job as the scheduler would start them (nothing runs). */
import { join } from "node:path";
import { formatDateTime } from "../util/format.ts";
import { renderTable } from "../util/table.ts";
import type { SchedulerConfig } from "../config/scheduler_config.ts";
import { longestInterval, nextRun, spread } from "./schedule.ts";
import { summarizeJobSync } from "./summary.ts";

export interface PlannedRun {
  job: string;
  time: number;
  tags: string[];
}

/**
 * Assumes every run succeeds at its planned time (so each run feeds the next). Reads the
 * job directories with blocking I/O: a one-shot command, and twice as fast that way.
 */
export function planRuns(
  config: SchedulerConfig,
  now: number,
  count: number,
  only: string[] = [],
): PlannedRun[] {
  const names = only.length ? only : Object.keys(config.jobs).sort();
  const out: PlannedRun[] = [];
  for (const name of names) {
    const job = config.jobs[name];
    const summary = summarizeJobSync(join(config.baseDir, name));
    const lastByTag = new Map(summary.lastByTag);
    let empty = summary.completeCount === 0;
    const sp = spread(name, longestInterval(job.scheduleDef));
    let t = now;
    const runs: PlannedRun[] = [];
    for (let i = 0; i < count; i++) {
      const r = nextRun(t, job.scheduleDef, sp, lastByTag, empty);
      runs.push({ job: name, time: r.time, tags: r.tags });
      for (const tag of r.tags) lastByTag.set(tag, r.time);
      empty = false;
      t = r.time;
    }
    out.push(...runs);
  }
  const order = new Map(names.map((n, i) => [n, i]));
  return out.sort((a, b) => order.get(a.job)! - order.get(b.job)! || a.time - b.time);
}

const HEADERS = ["Job", "Next run (UTC)", "Tags"];

export function planTable(runs: PlannedRun[]): string {
  const rows = runs.map((r) => [r.job, formatDateTime(new Date(r.time * 1000)), r.tags.join(",")]);
  return renderTable(HEADERS.map((header) => ({ header })), rows);
}

/** `plan --json`: one object per run, times as ISO 8601 and Unix seconds. */
export function planJson(runs: PlannedRun[]): string {
  return JSON.stringify(
    runs.map((r) => ({
      job: r.job,
      time: new Date(r.time * 1000).toISOString(),
      timestamp: r.time,
      tags: r.tags,
    })),
    null,
    2,
  );
}
