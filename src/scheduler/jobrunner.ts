/**
 * One configured job inside the scheduler: wait for the next slot (or a manual trigger),
 * take a worker slot, write the job's config, run `backy backup` as a child, then
 * `backy expire`; back off exponentially while it fails (design D9).
 */
import { join } from "node:path";
import { errorMessage } from "../util/errors.ts";
import { logger, ReopeningFile } from "../util/log.ts";
import { selfCommand } from "../util/self.ts";
import { atomicWrite, exists } from "../util/fs.ts";
import { JobDir } from "../repo/jobdir.ts";
import { parseJobConfig, serializeJobConfig, type SourceType } from "../repo/jobconfig.ts";
import type { Backend } from "../repo/revision.ts";
import type { JobConfig } from "../config/scheduler_config.ts";
import { probeBackend } from "../store/probe.ts";
import {
  backoffSeconds,
  longestInterval,
  nextRun,
  type Schedule,
  slaOk,
  sortedTags,
  spread,
} from "./schedule.ts";
import type { Semaphore } from "./semaphore.ts";
import { EMPTY_SUMMARY, type JobSummary, refreshSummary } from "./summary.ts";

const log = logger("scheduler");

export type JobState =
  | ""
  | "waiting"
  | "waiting for worker slot"
  | "running"
  | "finished"
  | "failed"
  | "stopped";

export class JobRunner {
  status: JobState = "";
  next?: { time: number; tags: string[] };
  failures = 0;
  lastFailureAt = 0;
  lastExit?: number;
  summary: JobSummary = EMPTY_SUMMARY;
  private spreadValue: number;
  private wake?: () => void;
  private runNowFlag = false;
  private rescheduleFlag = false;
  private stopping = false;
  private child?: Deno.ChildProcess;
  /** Only a backup may be interrupted: a killed expire could leave half-removed revisions. */
  private childIsBackup = false;
  private abort = new AbortController();
  done: Promise<void> = Promise.resolve();
  private refreshing: Promise<void> = Promise.resolve();

  constructor(
    public cfg: JobConfig,
    private baseDir: string,
    private workers: Semaphore,
  ) {
    this.spreadValue = spread(cfg.name, longestInterval(cfg.scheduleDef));
  }

  get name(): string {
    return this.cfg.name;
  }

  get dir(): string {
    return join(this.baseDir, this.cfg.name);
  }

  get schedule(): Schedule {
    return this.cfg.scheduleDef;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  start(): void {
    this.done = this.loop().catch((e) => {
      log.error("Job loop crashed", { job: this.name, error: errorMessage(e) });
    });
  }

  /** New settings from a reload: take effect from the next computed slot. */
  update(cfg: JobConfig): void {
    this.cfg = cfg;
    this.spreadValue = spread(cfg.name, longestInterval(cfg.scheduleDef));
    this.rescheduleFlag = true;
    this.wake?.();
  }

  /** Cuts the wait short (telnet `run`); backoff is not reset. */
  runNow(): void {
    this.runNowFlag = true;
    this.wake?.();
  }

  /**
   * Stops after the current run (reload) or, with `kill`, terminates a running backup
   * (shutdown; its incomplete revision never counts). A running expire always finishes.
   */
  async stop(kill: boolean): Promise<void> {
    this.stopping = true;
    this.abort.abort(new Error("stopped"));
    this.wake?.();
    if (kill && this.child && this.childIsBackup) {
      try {
        this.child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    await this.done;
  }

  slaOk(now: number): boolean {
    return slaOk(now, this.summary.newest?.time, this.schedule);
  }

  sortedTags(tags: string[]): string[] {
    return sortedTags(tags, this.schedule);
  }

  /**
   * Re-reads the job directory if it changed. Calls queue behind each other, so the status
   * loop and the job loop never scan the same directory twice at once (at startup every
   * job would otherwise be read twice).
   */
  refresh(): Promise<void> {
    const run = async () => {
      this.summary = await refreshSummary(this.dir, this.summary);
    };
    const next = this.refreshing.then(run, run);
    this.refreshing = next;
    return next;
  }

  computeNext(now: number): { time: number; tags: string[] } {
    const s = this.summary;
    const plan = nextRun(now, this.schedule, this.spreadValue, s.lastByTag, s.completeCount === 0);
    if (this.failures > 0) {
      const retry = this.lastFailureAt + backoffSeconds(this.failures);
      if (retry > plan.time) return { time: retry, tags: plan.tags };
    }
    return plan;
  }

  /** Sleeps until `time`, a trigger, a reschedule or stop; true when the time has come. */
  private async sleepUntil(time: number): Promise<boolean> {
    while (!this.stopping && !this.runNowFlag && !this.rescheduleFlag) {
      const ms = time * 1000 - Date.now();
      if (ms <= 0) return true;
      await new Promise<void>((resolve) => {
        // Cap each sleep so clock jumps are noticed.
        const t = setTimeout(resolve, Math.min(ms, 60_000));
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    return this.runNowFlag;
  }

  private async loop(): Promise<void> {
    await this.refresh();
    while (!this.stopping) {
      const now = Date.now() / 1000;
      this.next = this.computeNext(now);
      this.status = "waiting";
      const planned = this.next;
      this.rescheduleFlag = false;
      const due = await this.sleepUntil(planned.time);
      if (this.stopping) break;
      if (!due) continue; // settings changed: compute the slot again
      const tags = planned.tags;
      this.runNowFlag = false;
      this.status = "waiting for worker slot";
      try {
        await this.workers.acquire(this.abort.signal);
      } catch {
        break; // stopping
      }
      try {
        this.status = "running";
        await this.runOnce(tags);
      } finally {
        this.workers.release();
      }
    }
    this.status = "stopped";
    this.next = undefined;
  }

  private async runOnce(tags: string[]): Promise<void> {
    const started = Date.now() / 1000;
    let code: number;
    try {
      await this.writeJobConfig();
      code = await this.spawn(["backup", tags.join(",")]);
    } catch (e) {
      log.error("Cannot run backup", { job: this.name, error: errorMessage(e) });
      code = -1;
    }
    this.lastExit = code;
    if (code === 0) {
      this.failures = 0;
      this.status = "finished";
      log.info("Backup finished", { job: this.name, tags: tags.join(",") });
    } else if (this.stopping) {
      // We terminated it (shutdown): its incomplete revision is removed by the next backup.
      this.status = "stopped";
      log.info("Backup interrupted by shutdown", { job: this.name, exit: code });
    } else {
      this.failures++;
      this.lastFailureAt = started;
      this.status = "failed";
      log.error(`${this.name}: exit status ${code}`, {
        job: this.name,
        retry_in: backoffSeconds(this.failures),
      });
    }
    if (!this.stopping || code === 0) {
      try {
        if (await exists(JobDir.configPath(this.dir))) {
          const ex = await this.spawn(["expire"]);
          if (ex !== 0) log.warning("Expiry failed", { job: this.name, exit: ex });
        }
      } catch (e) {
        log.error("Cannot run expire", { job: this.name, error: errorMessage(e) });
      }
    }
    await this.refresh();
  }

  /** The job directory's config: the source from the main config plus backend and schedule. */
  private async writeJobConfig(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: false }).catch((e) => {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    });
    const file = JobDir.configPath(this.dir);
    let previous: string | undefined;
    let backend: Backend | undefined = this.cfg.backend;
    try {
      previous = await Deno.readTextFile(file);
    } catch {
      previous = undefined;
    }
    if (previous !== undefined && backend === undefined) {
      // The backend never flips by itself: keep what the job directory already uses, also
      // when its config is from another version (e.g. 2.2's `backend: cowfile`).
      try {
        backend = parseJobConfig(previous, file).backend;
      } catch {
        backend = /^backend:\s*chunked\s*$/m.test(previous) ? "chunked" : "cow";
      }
    }
    backend ??= await probeBackend(this.dir);
    const { type, ...source } = this.cfg.source;
    const schedule: Record<string, { interval: number; keep: number }> = {};
    for (const [tag, def] of Object.entries(this.cfg.scheduleDef)) {
      schedule[tag] = { interval: def.interval, keep: def.keep };
    }
    const text = serializeJobConfig({ type: type as SourceType, source, backend, schedule });
    if (text !== previous) await atomicWrite(file, text, 0o644);
  }

  /** Runs `backy -b DIR -l DIR/backy.log ARGS`, its stdout/stderr appended to that log. */
  private async spawn(args: string[]): Promise<number> {
    const logfile = join(this.dir, "backy.log");
    const [cmd, ...pre] = selfCommand();
    const child = new Deno.Command(cmd, {
      args: [...pre, "-b", this.dir, "-l", logfile, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    this.childIsBackup = args[0] === "backup";
    const sink = new ReopeningFile(logfile);
    const dec = new TextDecoder();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) {
        try {
          sink.write(dec.decode(chunk, { stream: true }));
        } catch {
          // a broken log must not wedge the child on a full pipe
        }
      }
    };
    try {
      const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
      return status.signal
        ? 128 + (Deno.build.os === "linux" ? signalNumber(status.signal) : 0)
        : status.code;
    } finally {
      sink.close();
      this.child = undefined;
    }
  }
}

function signalNumber(sig: string): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[sig] ?? 0;
}
