/** A stand-in for the daemon: records what the shell asked it to do. */
import type { SchedulerControl } from "../../src/status/control.ts";
import type { JobStatus } from "../../src/status/jobstatus.ts";

export class FakeControl implements SchedulerControl {
  triggered: string[] = [];
  reloads = 0;
  constructor(public jobList: JobStatus[], public reloadResult = "reloaded: 2 jobs added") {}

  jobs(): Promise<JobStatus[]> {
    return Promise.resolve(this.jobList.map((j) => ({ ...j })));
  }
  runJob(name: string): boolean {
    if (!this.jobList.some((j) => j.job === name)) return false;
    this.triggered.push(name);
    return true;
  }
  runAll(): number {
    for (const j of this.jobList) this.triggered.push(j.job);
    return this.jobList.length;
  }
  reload(): Promise<string> {
    this.reloads++;
    return Promise.resolve(this.reloadResult);
  }
  workers(): { limit: number; busy: number } {
    return { limit: 2, busy: 1 };
  }
}

const t = (iso: string) => Date.parse(iso) / 1000;

/** A job status with the counters at their idle values. */
export function job(fields: Partial<JobStatus> & Pick<JobStatus, "job">): JobStatus {
  return {
    sla: "OK",
    slaOverdue: 0,
    status: "waiting",
    lastTags: [],
    nextTags: [],
    failures: 0,
    revisions: 0,
    distrusted: 0,
    damaged: 0,
    storedBytes: 0,
    since: t("2024-01-01T00:00:00Z"),
    ...fields,
  };
}

/** Deliberately unsorted, with missing values, one failing and one running job. */
export function sampleJobs(): JobStatus[] {
  return [
    job({
      job: "web01",
      lastTime: t("2024-03-01T10:00:00Z"),
      lastTags: ["daily", "weekly"],
      lastDuration: 12.34,
      lastBytes: 1048576,
      lastSuccess: t("2024-03-01T10:00:12Z"),
      nextTime: t("2024-03-02T10:00:05Z"),
      nextTags: ["daily"],
      revisions: 3,
      storedBytes: 3 * 1048576,
    }),
    job({
      job: "db-main",
      sla: "TOO OLD",
      slaOverdue: 200000,
      status: "failing",
      failures: 2,
      lastError: "source file /srv/db.img is gone: No such file or directory (os error 2)",
      lastFailure: t("2024-03-01T11:00:00Z"),
      nextTime: t("2024-03-01T11:30:00Z"),
      nextTags: ["hourly"],
    }),
    job({
      job: "app",
      status: "running",
      lastTime: t("2024-02-29T23:59:59Z"),
      lastTags: ["hourly"],
      lastDuration: 845,
      runningSince: t("2024-03-01T11:59:00Z"),
      progress: {
        pid: 1,
        command: "backup",
        phase: "copying",
        done: 1073741824,
        total: 4294967296,
        rate: 52428800,
        eta: 61.4,
        updated: t("2024-03-01T12:00:00Z"),
      },
    }),
  ];
}

export function manyJobs(n: number): JobStatus[] {
  return Array.from({ length: n }, (_, i) =>
    job({
      job: `vm${String(i).padStart(5, "0")}`,
      lastTime: Date.UTC(2024, 0, 1, 0, 0, i % 60) / 1000,
      lastTags: ["daily"],
      lastDuration: i / 10,
      nextTime: Date.UTC(2024, 0, 2) / 1000,
      nextTags: ["daily", "weekly"],
    }));
}
