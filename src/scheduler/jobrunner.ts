/**
 * One configured job inside the scheduler: wait for the next slot (or a manual trigger),
 * take a worker slot, write the job's config, run `backy backup` as a child, then
 * `backy expire`; back off exponentially while it fails (design D9). Children that run
 * past `backup-timeout` are killed; each run's outcome (failures in a row, the child's
 * error line) is kept for monitoring, and the configured callbacks run after it.
 */
import os from "node:os";
import { join } from "node:path";
import { errorMessage } from "../util/errors.ts";
import { logger, ReopeningFile } from "../util/log.ts";
import { selfCommand } from "../util/self.ts";
import { atomicWrite, exists } from "../util/fs.ts";
import { JobDir } from "../repo/jobdir.ts";
import { parseJobConfig, serializeJobConfig, type SourceType } from "../repo/jobconfig.ts";
import { type Backend, formatRevTimestamp, isComplete, type Revision } from "../repo/revision.ts";
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
import { type JobState, type JobStatus, oneLine, reportedState } from "../status/jobstatus.ts";
import type { Progress } from "../status/progress.ts";
import { runHook } from "./callback.ts";
import { statusEntry, statusYaml } from "./statusfile.ts";
import YAML from "yaml";

const log = logger("scheduler");

/** What the runner takes from the global config; read anew for every run (reloads). */
export interface RunnerSettings {
  /** Seconds a child (backup, expire) may run before it is killed. */
  backupTimeout: number;
  completedCallback?: string;
  failedCallback?: string;
  /** Seconds. */
  callbackTimeout: number;
  /** Scrub period in seconds (0: no scrubbing). */
  verifyEvery: number;
  /** Scrub byte budget per job and day. */
  verifyBudget?: number;
}

/** A scrub runs at most this often per job (after a backup, in the same worker slot). */
const SCRUB_EVERY = 20 * 3600;

/** State worth keeping across scheduler restarts (read back from the status file). */
export interface CarriedState {
  failures: number;
  lastError?: string;
  lastFailure?: number;
  since?: number;
}

/** How long a killed child gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 10_000;

/** The runner's own states; what is reported adds `failing` (see reportedState). */
type RunnerState = Exclude<JobState, "failing">;

/** How one child ended. */
interface ChildResult {
  code: number;
  /** One line saying why it failed (the child's `Error:` line, a signal, the timeout). */
  error?: string;
}

export class JobRunner {
  /** When this runner last started a scrub (Unix seconds). */
  private lastScrub = 0;
  state: RunnerState = "";
  next?: { time: number; tags: string[] };
  failures = 0;
  lastFailureAt = 0;
  lastError?: string;
  lastExit?: number;
  /** When this scheduler first knew the job. */
  since: number;
  /** Start of the running backup. */
  runningSince?: number;
  summary: JobSummary = EMPTY_SUMMARY;
  /** Bumped on every change of what statusAt reports (status file cache key). */
  version = 0;
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
    private settings: () => RunnerSettings,
    carried?: CarriedState,
    now = Date.now() / 1000,
  ) {
    this.spreadValue = spread(cfg.name, longestInterval(cfg.scheduleDef));
    this.since = carried?.since ?? now;
    if (carried && carried.failures > 0) {
      this.failures = carried.failures;
      this.lastError = carried.lastError;
      // Not the backoff clock: a restarted scheduler retries on the regular schedule.
      this.lastFailureAt = 0;
      this.carriedFailureAt = carried.lastFailure;
    }
  }

  /** When the last failure happened, as far as known (this process or the status file). */
  private carriedFailureAt?: number;

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

  /** The 2.1 `status` word plus `failing` for a job waiting to retry a failed run. */
  get status(): JobState {
    return reportedState(this.state, this.failures);
  }

  private setState(state: RunnerState): void {
    this.state = state;
    this.version++;
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
    this.version++;
    this.wake?.();
  }

  /** Cuts the wait short (telnet `run`, HTTP POST run); backoff is not reset. */
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

  /** Everything the job reports at `now`; `progress` is the running backup's, if known. */
  statusAt(now: number, progress?: Progress): JobStatus {
    const s = this.summary;
    const ok = this.slaOk(now);
    const st: JobStatus = {
      job: this.name,
      sla: ok ? "OK" : "TOO OLD",
      slaOverdue: ok || !s.newest ? 0 : Math.round(now - s.newest.time),
      status: this.status,
      lastTags: s.newest ? this.sortedTags(s.newest.tags) : [],
      nextTags: this.next?.tags ?? [],
      failures: this.failures,
      revisions: s.completeCount,
      distrusted: s.distrustedCount,
      damaged: s.damagedCount,
      storedBytes: s.storedBytes,
      since: this.since,
    };
    if (s.oldestProven !== undefined) st.oldestVerified = s.oldestProven;
    if (s.newest) {
      st.lastTime = s.newest.time;
      st.lastDuration = s.newest.duration;
      st.lastBytes = s.newest.bytes;
      if (s.newest.duration !== undefined) st.lastSuccess = s.newest.time + s.newest.duration;
    }
    if (this.next) st.nextTime = this.next.time;
    if (this.failures > 0) {
      if (this.lastError !== undefined) st.lastError = this.lastError;
      const at = this.lastFailureAt || this.carriedFailureAt;
      if (at) st.lastFailure = at;
    }
    if (s.verificationFailed) st.problem = `verification failed: ${s.verificationFailed}`;
    if (this.state === "running" && this.runningSince !== undefined) {
      st.runningSince = this.runningSince;
      if (progress) st.progress = progress;
    }
    return st;
  }

  /**
   * Re-reads the job directory if it changed. Calls queue behind each other, so the status
   * loop and the job loop never scan the same directory twice at once (at startup every
   * job would otherwise be read twice).
   */
  refresh(): Promise<void> {
    const run = async () => {
      const before = this.summary;
      this.summary = await refreshSummary(this.dir, this.summary);
      if (this.summary !== before) this.version++;
    };
    const next = this.refreshing.then(run, run);
    this.refreshing = next;
    return next;
  }

  computeNext(now: number): { time: number; tags: string[] } {
    const s = this.summary;
    const plan = nextRun(now, this.schedule, this.spreadValue, s.lastByTag, s.completeCount === 0);
    if (this.failures > 0 && this.lastFailureAt > 0) {
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
      const scrubAt = this.nextScrub(now, this.next.time);
      if (scrubAt !== undefined) {
        if (scrubAt <= now) {
          if (!(await this.inWorkerSlot(() => this.scrub(now)))) break;
        } else {
          this.setState("waiting");
          this.rescheduleFlag = false;
          await this.sleepUntil(scrubAt);
        }
        continue; // the time has moved on: plan again
      }
      this.setState("waiting");
      const planned = this.next;
      this.rescheduleFlag = false;
      const due = await this.sleepUntil(planned.time);
      if (this.stopping) break;
      if (!due) continue; // settings changed: compute the slot again
      const tags = planned.tags;
      this.runNowFlag = false;
      this.setState("waiting for worker slot");
      try {
        await this.workers.acquire(this.abort.signal);
      } catch {
        break; // stopping
      }
      let outcome: RunOutcome | undefined;
      try {
        this.setState("running");
        outcome = await this.runOnce(tags);
      } finally {
        this.workers.release();
      }
      // Hooks run without a worker slot, bounded by their own timeout.
      if (outcome) await this.runHooks(outcome);
    }
    this.setState("stopped");
    this.next = undefined;
  }

  private async runOnce(tags: string[]): Promise<RunOutcome | undefined> {
    const started = Date.now() / 1000;
    this.runningSince = started;
    let result: ChildResult;
    try {
      await this.writeJobConfig();
      result = await this.spawn(["backup", tags.join(",")]);
    } catch (e) {
      result = { code: -1, error: `cannot run backup: ${errorMessage(e)}` };
    }
    const code = result.code;
    this.lastExit = code;
    let outcome: RunOutcome | undefined;
    if (code === 0) {
      this.failures = 0;
      this.lastError = undefined;
      this.carriedFailureAt = undefined;
      log.info("Backup finished", { job: this.name, tags: tags.join(",") });
      outcome = "completed";
    } else if (this.stopping) {
      // We terminated it (shutdown): its incomplete revision is removed by the next backup.
      log.info("Backup interrupted by shutdown", { job: this.name, exit: code });
    } else {
      this.failures++;
      this.lastFailureAt = started;
      this.lastError = oneLine(result.error ?? `exit status ${code}`);
      const detail = result.error ? `: ${this.lastError}` : "";
      log.error(`${this.name}: exit status ${code}${detail}`, {
        job: this.name,
        failures: this.failures,
        retry_in: backoffSeconds(this.failures),
      });
      outcome = "failed";
    }
    this.version++;
    if (!this.stopping || code === 0) {
      try {
        if (await exists(JobDir.configPath(this.dir))) {
          const ex = await this.spawn(["expire"]);
          if (ex.code !== 0) {
            log.warning("Expiry failed", { job: this.name, exit: ex.code, error: ex.error });
          }
        }
      } catch (e) {
        log.error("Cannot run expire", { job: this.name, error: errorMessage(e) });
      }
    }
    this.runningSince = undefined;
    await this.refresh();
    return outcome;
  }

  /**
   * When to scrub before the next backup, if at all: scrubbing is on, the job has revisions,
   * the last scrub is a day ago (less when the period is short, e.g. in tests), and the next
   * backup is not about to start.
   */
  private nextScrub(now: number, nextBackup: number): number | undefined {
    const { verifyEvery } = this.settings();
    if (!verifyEvery || this.stopping || this.runNowFlag) return undefined;
    if (this.summary.completeCount === 0) return undefined;
    const every = Math.min(SCRUB_EVERY, verifyEvery / 4);
    const at = Math.max(now, this.lastScrub + every);
    return at < nextBackup - Math.min(60, every / 2) ? at : undefined;
  }

  /** Runs `fn` holding a worker slot; false when the runner stops while waiting for one. */
  private async inWorkerSlot(fn: () => Promise<void>): Promise<boolean> {
    this.setState("waiting for worker slot");
    try {
      await this.workers.acquire(this.abort.signal);
    } catch {
      return false; // stopping
    }
    try {
      this.setState("running");
      await fn();
    } finally {
      this.workers.release();
    }
    return true;
  }

  /**
   * The scrub (issue 9): `backy verify --scrub` reads the stalest revisions within a budget
   * that covers the job's data once per `verify-every`. In the job's own loop, between its
   * backups: never at the same time as one.
   */
  private async scrub(now: number): Promise<void> {
    const { verifyEvery, verifyBudget } = this.settings();
    this.lastScrub = now;
    const args = ["verify", "--scrub", "--period", `${Math.round(verifyEvery)}s`];
    if (verifyBudget !== undefined) args.push("--max-bytes", String(verifyBudget));
    try {
      const r = await this.spawn(args);
      if (r.code === 0) log.info("Scrub done", { job: this.name });
      else {
        log.error(`${this.name}: scrub found damage or failed: ${r.error ?? `exit ${r.code}`}`, {
          job: this.name,
        });
      }
    } catch (e) {
      log.error("Cannot run the scrub", { job: this.name, error: errorMessage(e) });
    }
    await this.refresh();
  }

  /** `backup-completed-callback` after a success, `backup-failed-callback` after a failure. */
  private async runHooks(outcome: RunOutcome): Promise<void> {
    const settings = this.settings();
    const program = outcome === "completed" ? settings.completedCallback : settings.failedCallback;
    if (!program) return;
    const kind = outcome === "completed" ? "backup-completed-callback" : "backup-failed-callback";
    let input: string;
    try {
      input = outcome === "completed"
        ? await completedCallbackInput(this.dir)
        : failedCallbackInput(this.statusAt(Date.now() / 1000));
    } catch (e) {
      log.error(`${kind} not run: cannot read the job`, { job: this.name, error: errorMessage(e) });
      return;
    }
    const r = await runHook(program, [this.name], input, settings.callbackTimeout * 1000);
    const output = oneLine(r.output, 200) || undefined;
    if (r.spawnError !== undefined) {
      log.error(`${kind} could not be started`, { job: this.name, error: r.spawnError });
    } else if (r.timedOut) {
      log.error(`${kind} killed after ${settings.callbackTimeout} s`, {
        job: this.name,
        output,
      });
    } else if (r.code !== 0) {
      log.error(`${kind} failed`, {
        job: this.name,
        exit: r.code ?? r.signal,
        output,
      });
    } else {
      log.info(`${kind} done`, { job: this.name, output });
    }
  }

  /** The job directory's config: the source from the main config plus backend and schedule. */
  private async writeJobConfig(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: false, mode: 0o700 }).catch((e) => {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    });
    const file = JobDir.configPath(this.dir);
    let previous: string | undefined;
    let backend: Backend | undefined = this.cfg.backend;
    let s3 = this.cfg.s3;
    try {
      previous = await Deno.readTextFile(file);
    } catch {
      previous = undefined;
    }
    if (previous !== undefined && backend === undefined) {
      // The backend never flips by itself: keep what the job directory already uses, also
      // when its config is from another version (e.g. 2.2's `backend: cowfile`).
      try {
        const prev = parseJobConfig(previous, file);
        backend = prev.backend;
        s3 ??= prev.s3;
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
    const text = serializeJobConfig({
      type: type as SourceType,
      source,
      backend,
      schedule,
      ...(this.cfg.verify ? { verify: this.cfg.verify } : {}),
      ...(backend === "s3" && s3 ? { s3 } : {}),
    });
    // It may hold a Consul token: owner only (D18).
    if (text !== previous) await atomicWrite(file, text, 0o600);
  }

  /**
   * Runs `backy -b DIR -l DIR/backy.log ARGS` in its own process group, its stdout/stderr
   * appended to that log (the child's last `Error:` line kept as the reason). A child still
   * running after `backup-timeout` gets SIGTERM, then its group SIGKILL.
   */
  private async spawn(args: string[]): Promise<ChildResult> {
    const logfile = join(this.dir, "backy.log");
    const [cmd, ...pre] = selfCommand();
    const child = new Deno.Command(cmd, {
      args: [...pre, "-b", this.dir, "-l", logfile, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
    this.child = child;
    this.childIsBackup = args[0] === "backup";
    const timeout = this.settings().backupTimeout;
    let timedOut = false;
    let killTimer: ReturnType<typeof setTimeout> | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      log.error(
        `${this.name}: ${args[0]} still running after ${formatSeconds(timeout)}, killing it`,
        {
          job: this.name,
          pid: child.pid,
        },
      );
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(() => signalGroup(child.pid, "SIGKILL"), KILL_GRACE_MS);
    }, timeout * 1000);
    const sink = new ReopeningFile(logfile);
    let lastError: string | undefined;
    let lastLine: string | undefined;
    const pump = async (stream: ReadableStream<Uint8Array>, watch: boolean) => {
      const dec = new TextDecoder();
      let partial = "";
      for await (const chunk of stream) {
        const text = dec.decode(chunk, { stream: true });
        try {
          sink.write(text);
        } catch {
          // a broken log must not wedge the child on a full pipe
        }
        if (!watch) continue;
        const lines = (partial + text).split("\n");
        partial = lines.pop()!.slice(-4096);
        for (const line of lines) {
          if (line.startsWith("Error: ")) lastError = line.slice(7);
          else if (line.trim() !== "") lastLine = line;
        }
      }
      if (watch && partial.startsWith("Error: ")) lastError = partial.slice(7);
    };
    try {
      const [status] = await Promise.all([
        child.status,
        pump(child.stdout, false),
        pump(child.stderr, true),
      ]);
      const code = status.signal
        ? 128 + (Deno.build.os === "linux" ? signalNumber(status.signal) : 0)
        : status.code;
      if (code === 0) return { code };
      let error = lastError ?? lastLine;
      if (timedOut) {
        error = `killed after running longer than backup-timeout (${formatSeconds(timeout)})`;
      } else if (status.signal && lastError === undefined) {
        error = `killed by ${status.signal}`;
      }
      return error === undefined ? { code } : { code, error: oneLine(error) };
    } finally {
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      sink.close();
      this.child = undefined;
    }
  }
}

type RunOutcome = "completed" | "failed";

function signalGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // gone already
  }
}

/** `90 s`, `2 h`, `1 d`: durations as the config writes them, for messages. */
export function formatSeconds(s: number): string {
  if (s % 86400 === 0) return `${s / 86400} d`;
  if (s % 3600 === 0) return `${s / 3600} h`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

/**
 * stdin of `backup-completed-callback`, as backy 2.5 gave it (`status --yaml`): the job's
 * complete revisions as a YAML list of their metadata, oldest first.
 */
export async function completedCallbackInput(dir: string): Promise<string> {
  const job = await JobDir.open(dir);
  const { revisions } = await job.scan();
  return YAML.stringify(revisions.filter(isComplete).map(revisionDocument));
}

/** A revision's metadata as its `.rev` file holds it. */
export function revisionDocument(r: Revision): Record<string, unknown> {
  return {
    ...r.extra,
    uuid: r.id,
    timestamp: formatRevTimestamp(r.timestampUs),
    parent: r.parent,
    stats: r.stats,
    tags: r.tags,
    trust: r.trust,
    backend: r.backend,
  };
}

/** stdin of `backup-failed-callback`: the job's status entry (as in the status file). */
export function failedCallbackInput(status: JobStatus): string {
  return statusYaml([statusEntry(status)]).replace(/^- /, "").replace(/^ {2}/gm, "");
}

function signalNumber(sig: string): number {
  return os.constants.signals[sig as NodeJS.Signals] ?? 0;
}
