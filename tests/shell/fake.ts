/** A stand-in for the daemon: records what the shell asked it to do. */
import type { JobView, SchedulerControl } from "../../src/shell/commands.ts";

export class FakeControl implements SchedulerControl {
  triggered: string[] = [];
  reloads = 0;
  constructor(public jobList: JobView[], public reloadResult = "reloaded: 2 jobs added") {}

  jobs(): JobView[] {
    return this.jobList.map((j) => ({ ...j }));
  }
  runJob(name: string): boolean {
    if (!this.jobList.some((j) => j.name === name)) return false;
    this.triggered.push(name);
    return true;
  }
  runAll(): number {
    for (const j of this.jobList) this.triggered.push(j.name);
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

/** Deliberately unsorted, with missing values. */
export function sampleJobs(): JobView[] {
  return [
    {
      name: "web01",
      sla: "OK",
      status: "waiting",
      lastTime: new Date("2024-03-01T10:00:00Z"),
      lastTags: ["daily", "weekly"],
      lastDuration: 12.34,
      nextTime: new Date("2024-03-02T10:00:05Z"),
      nextTags: ["daily"],
    },
    {
      name: "db-main",
      sla: "TOO OLD",
      status: "",
      lastTags: [],
      nextTime: new Date("2024-03-01T11:30:00Z"),
      nextTags: ["hourly"],
    },
    {
      name: "app",
      sla: "OK",
      status: "waiting",
      lastTime: new Date("2024-02-29T23:59:59Z"),
      lastTags: ["hourly"],
      lastDuration: 845,
      nextTags: [],
    },
  ];
}

export function manyJobs(n: number): JobView[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `vm${String(i).padStart(5, "0")}`,
    sla: "OK" as const,
    status: "waiting",
    lastTime: new Date(Date.UTC(2024, 0, 1, 0, 0, i % 60)),
    lastTags: ["daily"],
    lastDuration: i / 10,
    nextTime: new Date(Date.UTC(2024, 0, 2)),
    nextTags: ["daily", "weekly"],
  }));
}
