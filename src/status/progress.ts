/**
 * A running `backy backup` replaces `<jobdir>/.progress` (JSON) every few seconds and removes
 * it when it ends. The scheduler shows it for running jobs; a file whose process is gone (a
 * crash) or that is malformed is ignored rather than shown as live progress.
 */
import { join } from "node:path";
import { formatBytes } from "../util/format.ts";
import type { ProgressRecord } from "../util/progress_format.ts";

/** The `.progress` file's content, as util/progress.ts writes it. */
export type Progress = ProgressRecord;

const PROGRESS_FILE = ".progress";

function finite(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

/** The progress record in `text`, or undefined when it is not one (fields checked, extras ignored). */
export function parseProgress(text: string): Progress | undefined {
  let d: unknown;
  try {
    d = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (d === null || typeof d !== "object" || Array.isArray(d)) return undefined;
  const o = d as Record<string, unknown>;
  if (!finite(o.pid) || !Number.isInteger(o.pid) || o.pid <= 0) return undefined;
  if (typeof o.command !== "string" || typeof o.phase !== "string") return undefined;
  if (!finite(o.done) || !finite(o.total) || !finite(o.rate) || !finite(o.updated)) {
    return undefined;
  }
  if (o.eta !== null && !finite(o.eta)) return undefined;
  return {
    pid: o.pid,
    command: oneWord(o.command),
    phase: oneWord(o.phase),
    done: o.done,
    total: o.total,
    rate: o.rate,
    eta: o.eta as number | null,
    updated: o.updated,
  };
}

/** Phase names end up in tables and log lines: keep them short and printable. */
function oneWord(s: string): string {
  return s.replace(/[^\w.:-]/g, "").slice(0, 32);
}

/** `H:MM:SS` (restic's ETA style), `M:SS` under an hour. */
export function formatEta(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(sec).padStart(2, "0")}`;
}

/** Percent of `total` done, 0-100 with one decimal; 0 for an unknown total. */
export function percent(p: Progress): number {
  if (!(p.total > 0)) return 0;
  return Math.min(100, Math.floor((p.done / p.total) * 1000) / 10);
}

/** `copying 45.2% (1.20 GiB of 2.67 GiB, 50.00 MiB/s, ETA 0:30)`. */
export function formatProgress(p: Progress): string {
  const parts = [`${formatBytes(p.done)} of ${formatBytes(p.total)}`, `${formatBytes(p.rate)}/s`];
  if (p.eta !== null) parts.push(`ETA ${formatEta(p.eta)}`);
  return `${p.phase} ${percent(p)}% (${parts.join(", ")})`;
}

/** True while `pid` names a live process (not a zombie). Linux: /proc. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The live progress of the job in `dir`, or undefined (no file, malformed, process gone). */
export async function readProgress(dir: string): Promise<Progress | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, PROGRESS_FILE));
  } catch {
    return undefined;
  }
  const p = parseProgress(text);
  return p && pidAlive(p.pid) ? p : undefined;
}
