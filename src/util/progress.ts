/**
 * Progress of a long command (backup, restore, verify): on a terminal (stderr is a TTY) a
 * live line through cli-progress (design D14); without one, a log line every
 * `BACKY_PROGRESS_INTERVAL` seconds (default 30); with a job directory, also
 * `<job>/.progress` (JSON, 0600, replaced atomically every ~2 s, removed by finish()), which
 * the scheduler shows for a running job.
 *
 * `advance()` only adds to a counter (it runs once per 4 MiB block); a timer samples the
 * counter for the rate and does all output, so the data path never waits for a terminal.
 */
// @ts-types="@types/cli-progress"
import cliProgress from "cli-progress";
import process from "node:process";
import { join } from "node:path";
import { BackyError } from "./errors.ts";
import { logger, onConsoleWrite } from "./log.ts";
import {
  etaSeconds,
  formatProgressLine,
  progressRecord,
  type ProgressState,
  RateWindow,
} from "./progress_format.ts";

/** What a command reports progress on. */
export interface ProgressOptions {
  /** `backup`, `restore`, `verify`. */
  command: string;
  /** `copying`, `verifying`, ... */
  phase: string;
  /** Bytes this phase will process (0 when unknown). */
  total: number;
  /** Write `<jobDir>/.progress` for the scheduler. */
  jobDir?: string;
  /** Show the live line (default: whether stderr is a terminal). */
  terminal?: boolean;
}

/** A running progress report. */
export interface Progress {
  /** Adds `bytes` processed: one addition, no I/O. */
  advance(bytes: number): void;
  /** Starts the next phase, counting from zero towards `total`. */
  setPhase(phase: string, total: number): void;
  /** Stops reporting: clears the live line, removes `.progress`. Idempotent. */
  finish(): void;
}

/** Seconds between progress log lines without a terminal (env `BACKY_PROGRESS_INTERVAL`). */
export function logIntervalSeconds(): number {
  const v = Number(Deno.env.get("BACKY_PROGRESS_INTERVAL"));
  return Number.isFinite(v) && v > 0 ? v : 30;
}

/** Seconds between rewrites of `.progress`. */
export const FILE_INTERVAL_SECONDS = 2;
/** Seconds between redraws of the live line. */
const TERMINAL_TICK_SECONDS = 0.25;

const active = new Set<Reporter>();
const log = logger("progress");
const now = () => performance.timeOrigin / 1000 + performance.now() / 1000;

class Reporter implements Progress {
  done = 0;
  private total: number;
  private phase: string;
  private readonly rates = new RateWindow();
  private readonly timer: number;
  private bar?: cliProgress.SingleBar;
  private lastLog: number;
  private lastFile = -Infinity;
  private readonly interval: number;
  private finished = false;

  constructor(private readonly opts: ProgressOptions) {
    this.total = opts.total;
    this.phase = opts.phase;
    const t = now();
    this.rates.sample(t, 0);
    this.lastLog = t;
    this.interval = logIntervalSeconds();
    if (opts.terminal ?? Deno.stderr.isTerminal()) {
      this.bar = new cliProgress.SingleBar({
        format: (_o, _p, payload: { line?: string }) => payload.line ?? "",
        stream: process.stderr,
        fps: 1 / TERMINAL_TICK_SECONDS,
        clearOnComplete: true,
        // Both off: a process killed while they are set would leave the terminal so.
        hideCursor: false,
        linewrap: true,
        gracefulExit: false,
      });
      this.bar.start(this.total, 0, { line: this.line() });
    }
    const tick = this.bar
      ? TERMINAL_TICK_SECONDS
      : Math.min(1, this.interval, opts.jobDir ? FILE_INTERVAL_SECONDS : Infinity);
    // Deno's timers are numbers (node:process above brings in Node's typings).
    this.timer = setInterval(() => this.tick(), tick * 1000) as unknown as number;
    Deno.unrefTimer(this.timer);
    this.writeFile(t);
  }

  advance(bytes: number): void {
    this.done += bytes;
  }

  setPhase(phase: string, total: number): void {
    const t = now();
    this.phase = phase;
    this.total = total;
    this.done = 0;
    this.rates.reset();
    this.rates.sample(t, 0);
    this.bar?.setTotal(total);
    this.writeFile(t, true);
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    clearInterval(this.timer);
    active.delete(this);
    this.bar?.stop();
    if (this.opts.jobDir) {
      try {
        Deno.removeSync(join(this.opts.jobDir, ".progress"));
      } catch {
        // never written, or removed already
      }
    }
  }

  /** Clears the live line before someone else writes to the terminal; the next tick redraws. */
  clearLine(): void {
    if (!this.bar) return;
    Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
    (this.bar as unknown as { lastDrawnString: string }).lastDrawnString = "";
  }

  private state(): ProgressState {
    const rate = this.rates.rate();
    return {
      command: this.opts.command,
      phase: this.phase,
      done: this.done,
      total: this.total,
      rate,
      eta: etaSeconds(this.done, this.total, rate),
    };
  }

  private line(): string {
    return formatProgressLine(this.state(), process.stderr.columns || undefined);
  }

  private tick(): void {
    const t = now();
    this.rates.sample(t, this.done);
    if (this.bar) {
      this.bar.update(Math.min(this.done, this.total), { line: this.line() });
    } else if (t - this.lastLog >= this.interval - 1e-3) {
      this.lastLog = t;
      log.info(`Progress: ${formatProgressLine(this.state())}`);
    }
    this.writeFile(t);
  }

  private writeFile(t: number, now = false): void {
    const dir = this.opts.jobDir;
    if (!dir || (!now && t - this.lastFile < FILE_INTERVAL_SECONDS - 1e-3)) return;
    this.lastFile = t;
    const record = progressRecord(this.state(), Deno.pid, Date.now() / 1000);
    // A fresh name created exclusively (never someone else's file or link), then renamed
    // over `.progress`, so a reader sees a whole record or none.
    const tmp = join(dir, `.progress.${crypto.randomUUID().slice(0, 8)}.tmp`);
    try {
      Deno.writeTextFileSync(tmp, JSON.stringify(record) + "\n", { createNew: true, mode: 0o600 });
      Deno.renameSync(tmp, join(dir, ".progress"));
    } catch (e) {
      // Progress is a convenience: it never fails the command it reports on.
      try {
        Deno.removeSync(tmp);
      } catch { /* not created */ }
      log.debug("Cannot write progress file", { dir, error: String(e) });
    }
  }
}

/** Starts reporting progress (see the module comment); call finish() when done. */
export function startProgress(opts: ProgressOptions): Progress {
  const r = new Reporter(opts);
  if (active.size === 0) onConsoleWrite(clearProgressLines);
  active.add(r);
  return r;
}

/** Clears every live progress line, e.g. before a log line goes to the terminal. */
export function clearProgressLines(): void {
  for (const r of active) r.clearLine();
}

/** Finishes every running progress report (on interrupt: no live line or `.progress` left). */
export function finishAllProgress(): void {
  for (const r of [...active]) r.finish();
}

/**
 * Refuses to write binary data (an image) to a terminal: `restore -` on a terminal would
 * flood it with garbage. `what` names the command in the message.
 */
export function refuseTerminal(file: { isTerminal(): boolean }, what: string): void {
  if (file.isTerminal()) {
    throw new BackyError(
      `${what}: refusing to write a disk image to a terminal; redirect stdout to a file ` +
        "or pipe it into a command",
    );
  }
}
