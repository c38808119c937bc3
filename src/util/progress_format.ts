/**
 * The pure side of progress reporting: rate over a sliding window, ETA, the one-line text
 * (terminal and log alike) and the `.progress` record the scheduler reads. Times are
 * seconds, injected by the caller, so every value here is exact under test.
 */
import { formatBytes } from "./format.ts";

/** How far back the rate looks: long enough to smooth bursts, short enough to follow change. */
export const RATE_WINDOW_SECONDS = 20;

/**
 * Bytes per second over the last `window` seconds of samples (the first sample, at the
 * start, stays until the window has filled). Samples come from a timer, not from every
 * advance, so this costs nothing per block.
 */
export class RateWindow {
  private times: number[] = [];
  private dones: number[] = [];

  constructor(readonly window = RATE_WINDOW_SECONDS) {}

  /** Records `done` bytes at time `t` (seconds, non-decreasing). */
  sample(t: number, done: number): void {
    this.times.push(t);
    this.dones.push(done);
    // Keep one sample at or before the window's start, so the window is always covered.
    while (this.times.length > 2 && this.times[1] <= t - this.window) {
      this.times.shift();
      this.dones.shift();
    }
  }

  /** Bytes per second over the window; 0 until two samples span some time. */
  rate(): number {
    const n = this.times.length;
    if (n < 2) return 0;
    const dt = this.times[n - 1] - this.times[0];
    return dt > 0 ? Math.max(0, this.dones[n - 1] - this.dones[0]) / dt : 0;
  }

  /** Forgets every sample (a new phase starts counting from zero). */
  reset(): void {
    this.times = [];
    this.dones = [];
  }
}

/** Seconds until `total` at `rate`, rounded up; null when unknown (no rate or no total). */
export function etaSeconds(done: number, total: number, rate: number): number | null {
  if (!(rate > 0) || !(total > 0)) return null;
  return Math.ceil(Math.max(0, total - done) / rate);
}

/** `0:00:07`, `1:42:37`, `123:00:00` (hours unbounded), like restic. */
export function formatClock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

/** A snapshot of one running command's progress. */
export interface ProgressState {
  command: string;
  phase: string;
  done: number;
  total: number;
  /** Bytes per second. */
  rate: number;
  /** Seconds, or null when unknown. */
  eta: number | null;
}

/** Percent done with one decimal, never above 100; `0.0` for an empty total. */
export function percent(done: number, total: number): string {
  if (!(total > 0)) return "0.0";
  return Math.min(100, Math.floor((done / total) * 1000) / 10).toFixed(1);
}

/**
 * The progress line: `backup copying  52.0% 10.40 GiB of 20.00 GiB, 203.41 MiB/s, ETA 0:00:51`
 * (`ETA -` while unknown). Cut to `width` columns when given.
 */
export function formatProgressLine(p: ProgressState, width?: number): string {
  const eta = p.eta === null ? "-" : formatClock(p.eta);
  const line = `${p.command} ${p.phase} ${percent(p.done, p.total).padStart(5)}% ` +
    `${formatBytes(p.done)} of ${formatBytes(p.total)}, ${formatBytes(Math.round(p.rate))}/s, ` +
    `ETA ${eta}`;
  return width !== undefined && width > 0 && line.length > width ? line.slice(0, width) : line;
}

/** The `.progress` record (JSON) the scheduler shows for a running job. */
export interface ProgressRecord {
  pid: number;
  command: string;
  phase: string;
  done: number;
  total: number;
  /** Bytes per second, rounded. */
  rate: number;
  /** Seconds, or null when unknown. */
  eta: number | null;
  /** Unix seconds of this snapshot. */
  updated: number;
}

/** The record for a snapshot taken at unix time `now` (seconds) by process `pid`. */
export function progressRecord(p: ProgressState, pid: number, now: number): ProgressRecord {
  return {
    pid,
    command: p.command,
    phase: p.phase,
    done: p.done,
    total: p.total,
    rate: Math.round(p.rate),
    eta: p.eta,
    updated: Math.floor(now),
  };
}
