/**
 * `GET /metrics`: the scheduler's state in the Prometheus text exposition format, through
 * prom-client (escaping, HELP/TYPE lines, number formatting). A fresh registry per scrape, so
 * a job removed by a reload disappears at once instead of lingering as a stale series.
 * Unknown values (a job that never succeeded has no last duration) are left out, not NaN.
 */
import { Gauge, Registry } from "prom-client";
import type { JobStatus } from "../status/jobstatus.ts";

/** Content-Type of the text format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type JobGauge = [name: string, help: string, value: (j: JobStatus) => number | undefined];

const JOB_GAUGES: JobGauge[] = [
  [
    "backy_job_last_success_timestamp_seconds",
    "When the newest complete revision was finished (Unix time)",
    (j) => j.lastSuccess,
  ],
  [
    "backy_job_newest_revision_timestamp_seconds",
    "Start of the newest complete revision (Unix time); the SLA is measured from it",
    (j) => j.lastTime,
  ],
  [
    "backy_job_consecutive_failures",
    "Scheduled runs of the job that failed in a row (0 after a success)",
    (j) => j.failures,
  ],
  [
    "backy_job_last_duration_seconds",
    "Duration of the newest complete backup",
    (j) => j.lastDuration,
  ],
  [
    "backy_job_last_written_bytes",
    "Bytes written by the newest complete backup",
    (j) => j.lastBytes,
  ],
  [
    "backy_job_stored_bytes",
    "Bytes written by all complete revisions (the estimate backy status prints)",
    (j) => j.storedBytes,
  ],
  ["backy_job_revisions", "Complete revisions of the job", (j) => j.revisions],
  [
    "backy_job_distrusted_revisions",
    "Complete revisions marked distrusted",
    (j) => j.distrusted,
  ],
  [
    "backy_job_sla_ok",
    "1 if the newest complete revision is within the SLA (1.5x the smallest interval), else 0",
    (j) => (j.sla === "OK" ? 1 : 0),
  ],
  [
    "backy_job_verification_failed",
    "1 if the newest backup failed its verification, else 0",
    (j) => (j.problem ? 1 : 0),
  ],
  [
    "backy_job_running",
    "1 while a backup of the job runs, else 0",
    (j) => (j.status === "running" ? 1 : 0),
  ],
  [
    "backy_job_next_run_timestamp_seconds",
    "When the next backup is planned (Unix time)",
    (j) => j.nextTime,
  ],
  [
    "backy_job_progress_done_bytes",
    "Bytes done by the running backup (from its progress file)",
    (j) => j.progress?.done,
  ],
  [
    "backy_job_progress_total_bytes",
    "Bytes the running backup has to go through",
    (j) => j.progress?.total,
  ],
];

/** The exposition text for `jobs` and the daemon's worker slots. */
export async function metricsText(
  jobs: JobStatus[],
  workers: { limit: number; busy: number },
  version: string,
): Promise<string> {
  const registry = new Registry();
  for (const [name, help, value] of JOB_GAUGES) {
    const g = new Gauge({ name, help, labelNames: ["job"] as const, registers: [registry] });
    for (const j of jobs) {
      const v = value(j);
      if (v !== undefined && Number.isFinite(v)) g.set({ job: j.job }, v);
    }
  }
  const gauge = (name: string, help: string, v: number) => {
    new Gauge({ name, help, registers: [registry] }).set(v);
  };
  gauge("backy_scheduler_jobs", "Configured jobs", jobs.length);
  gauge("backy_scheduler_workers_busy", "Worker slots in use (running backups)", workers.busy);
  gauge("backy_scheduler_workers_limit", "Worker slots (worker-limit)", workers.limit);
  new Gauge({
    name: "backy_scheduler_info",
    help: "Always 1; the version label names the running backy",
    labelNames: ["version"] as const,
    registers: [registry],
  }).set({ version }, 1);
  return await registry.metrics();
}
