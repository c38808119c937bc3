/** The port between the daemon and its front ends (telnet shell, HTTP endpoint). */
import type { JobStatus } from "./jobstatus.ts";

/** What the daemon offers the shell (and the HTTP endpoint). */
export interface SchedulerControl {
  /** All configured jobs, progress of running backups included. */
  jobs(): Promise<JobStatus[]>;
  /** Trigger an immediate run; false = unknown job. */
  runJob(name: string): boolean;
  /** Number of jobs triggered. */
  runAll(): number;
  /** Human result line, e.g. "reloaded: 2 jobs added" or an error text. */
  reload(): Promise<string>;
  workers(): { limit: number; busy: number };
}
