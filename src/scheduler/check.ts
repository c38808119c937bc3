/**
 * `backy check -c CONFIG`: a plugin per the monitoring-plugins guidelines over the
 * scheduler's status file (spec 5). Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, always with
 * a first line `STATE: text | perfdata` on stdout, problem lines after it and per-job
 * performance data at the end. backy 2.1's texts are kept for what 2.1 reported (SLA, a
 * missing or stale status file); the jobs come from the config, so a job the status file
 * lacks is a problem instead of going unnoticed.
 *
 * Per job (N = `critical-failures`):
 * - CRITICAL: newest complete revision older than 1.5x the smallest interval (2.1's SLA);
 *   N or more scheduled runs failed in a row; not in the status file.
 * - WARNING: fewer than N failed runs in a row; newest backup failed verification;
 *   distrusted revisions; no complete revision although configured for longer than the
 *   smallest interval.
 */
import YAML from "yaml";
import { errorMessage } from "../util/errors.ts";
import { loadSchedulerConfig, type SchedulerConfig } from "../config/scheduler_config.ts";
import { smallestInterval } from "./schedule.ts";
import { parseStatusTime } from "./statusfile.ts";

export type CheckCode = 0 | 1 | 2 | 3;

const STATE_NAMES = ["OK", "WARNING", "CRITICAL", "UNKNOWN"] as const;

/** Why a job is not OK. */
export type Reason =
  | "sla"
  | "failing"
  | "missing"
  | "failed"
  | "verification"
  | "distrusted"
  | "damaged"
  | "unverified"
  | "never";

export interface Problem {
  job: string;
  severity: 1 | 2;
  reason: Reason;
  /** One line for the plugin's long output. */
  text: string;
}

/** Per-job numbers behind the performance data. */
export interface JobMeasures {
  job: string;
  /** Seconds since the newest complete revision started; undefined: none yet. */
  age?: number;
  /** The SLA limit (1.5x the smallest interval) and the smallest interval itself. */
  critAge: number;
  warnAge: number;
  failures: number;
  duration?: number;
  bytes?: number;
  lastError?: string;
}

export interface CheckResult {
  code: CheckCode;
  /** The plugin output (without the final newline). */
  text: string;
  /** The same for scripts (`check --json`). */
  json: Record<string, unknown>;
}

/** The status file is stale after this many seconds (2.1: 5 minutes at a 30 s interval). */
export function staleAfter(statusInterval: number): number {
  return Math.max(300, 3 * statusInterval);
}

function spoken(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return `${seconds / 60} minutes`;
  return `${seconds} seconds`;
}

function unknown(text: string, extra: Record<string, unknown> = {}): CheckResult {
  return {
    code: 3,
    text: `UNKNOWN: ${noPipe(text.split("\n")[0])}`,
    json: { code: 3, state: "UNKNOWN", summary: text, problems: [], jobs: [], ...extra },
  };
}

/** Plugin output must not contain `|` outside the perfdata separator. */
function noPipe(text: string): string {
  return text.replaceAll("|", "/");
}

/** A label per the guidelines: quoted when needed, `'` doubled; `=` and `|` impossible. */
export function perfLabel(label: string): string {
  const clean = label.replace(/[=|]/g, "_");
  return /^[A-Za-z0-9_.:\/-]+$/.test(clean) ? clean : `'${clean.replaceAll("'", "''")}'`;
}

/** `label=value[uom];warn;crit;min;max` with trailing empty fields dropped. */
export function perfItem(
  label: string,
  value: number,
  uom = "",
  warn?: number,
  crit?: number,
  min?: number,
): string {
  const num = (
    n: number | undefined,
  ) => (n === undefined ? "" : String(Math.round(n * 1000) / 1000));
  const fields = [`${num(value)}${uom}`, num(warn), num(crit), num(min)];
  while (fields.length > 1 && fields.at(-1) === "") fields.pop();
  return `${perfLabel(label)}=${fields.join(";")}`;
}

function perfdata(m: JobMeasures, critical: number): string[] {
  const out: string[] = [];
  if (m.age !== undefined) out.push(perfItem(`${m.job}_age`, m.age, "s", m.warnAge, m.critAge, 0));
  out.push(perfItem(`${m.job}_failures`, m.failures, "", 1, critical, 0));
  if (m.duration !== undefined) {
    out.push(perfItem(`${m.job}_duration`, m.duration, "s", undefined, undefined, 0));
  }
  if (m.bytes !== undefined) {
    out.push(perfItem(`${m.job}_bytes`, m.bytes, "B", undefined, undefined, 0));
  }
  return out;
}

const SUMMARY: Record<Reason, string> = {
  sla: "jobs not within SLA",
  failing: "jobs failing",
  missing: "jobs not in the status file",
  failed: "jobs with a failed run",
  verification: "jobs with failed verification",
  distrusted: "jobs with distrusted revisions",
  damaged: "jobs with damaged revision files",
  unverified: "jobs not scrubbed within verify-every",
  never: "jobs without a successful backup",
};
const ORDER: Reason[] = [
  "sla",
  "failing",
  "missing",
  "failed",
  "verification",
  "distrusted",
  "damaged",
  "unverified",
  "never",
];

function num(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && /^\d+(\.\d+)?( s)?$/.test(v)) return parseFloat(v);
  return undefined;
}

/**
 * The verdict for the configured jobs given the status file's entries. Pure: `now` in Unix
 * seconds. Entries for jobs the config no longer has are ignored.
 */
export function evaluate(
  config: Pick<SchedulerConfig, "jobs" | "criticalFailures"> & { verifyEvery?: number },
  entries: Record<string, unknown>[],
  now: number,
): CheckResult {
  const byJob = new Map(entries.map((e) => [String(e.job), e]));
  const names = Object.keys(config.jobs).sort();
  const N = config.criticalFailures;
  const problems: Problem[] = [];
  const measures: JobMeasures[] = [];
  for (const job of names) {
    const interval = smallestInterval(config.jobs[job].scheduleDef);
    const m: JobMeasures = { job, critAge: 1.5 * interval, warnAge: interval, failures: 0 };
    measures.push(m);
    const e = byJob.get(job);
    if (!e) {
      problems.push({
        job,
        severity: 2,
        reason: "missing",
        text: `${job}: not in the status file (is the scheduler running this configuration?)`,
      });
      continue;
    }
    const lastTime = parseStatusTime(e.last_time);
    if (lastTime !== undefined) m.age = Math.max(0, Math.round(now - lastTime));
    m.failures = Number.isInteger(e.failures) ? e.failures as number : 0;
    m.duration = num(e.last_duration);
    if (lastTime !== undefined) m.bytes = num(e.last_bytes);
    if (typeof e.last_error === "string" && e.last_error !== "-") m.lastError = e.last_error;
    const error = m.lastError ? `, last error: ${m.lastError}` : "";
    if (e.sla !== "OK") {
      problems.push({
        job,
        severity: 2,
        reason: "sla",
        text: `${job} (last time: ${e.last_time})`,
      });
    }
    if (m.failures >= N) {
      problems.push({
        job,
        severity: 2,
        reason: "failing",
        text: `${job}: ${m.failures} failed runs in a row${error}`,
      });
    } else if (m.failures > 0) {
      problems.push({
        job,
        severity: 1,
        reason: "failed",
        text: `${job}: ${m.failures} failed ${m.failures === 1 ? "run" : "runs"} in a row ` +
          `(CRITICAL at ${N})${error}`,
      });
    }
    if (typeof e.problem === "string" && e.problem) {
      problems.push({ job, severity: 1, reason: "verification", text: `${job}: ${e.problem}` });
    }
    const distrusted = Number.isInteger(e.distrusted) ? e.distrusted as number : 0;
    if (distrusted > 0) {
      problems.push({
        job,
        severity: 1,
        reason: "distrusted",
        text: `${job}: ${distrusted} distrusted ${distrusted === 1 ? "revision" : "revisions"}`,
      });
    }
    const damaged = Number.isInteger(e.damaged_metadata) ? e.damaged_metadata as number : 0;
    if (damaged > 0) {
      problems.push({
        job,
        severity: 1,
        reason: "damaged",
        text: `${job}: ${damaged} unreadable revision ${damaged === 1 ? "file" : "files"} ` +
          "(see backy verify)",
      });
    }
    const proven = parseStatusTime(e.oldest_verified);
    const period = config.verifyEvery ?? 0;
    if (period > 0 && proven !== undefined && now - proven > period) {
      problems.push({
        job,
        severity: 1,
        reason: "unverified",
        text: `${job}: a revision not verified since ${e.oldest_verified} (scrub overdue)`,
      });
    }
    const since = parseStatusTime(e.since);
    if (lastTime === undefined && since !== undefined && now - since > interval) {
      problems.push({
        job,
        severity: 1,
        reason: "never",
        text: `${job}: no successful backup since it was configured (${e.since})`,
      });
    }
  }
  const code = problems.reduce<number>((c, p) => Math.max(c, p.severity), 0) as CheckCode;
  problems.sort((a, b) =>
    b.severity - a.severity || ORDER.indexOf(a.reason) - ORDER.indexOf(b.reason) ||
    (a.job < b.job ? -1 : a.job > b.job ? 1 : 0)
  );
  let summary: string;
  if (code === 0) summary = `${names.length} jobs within SLA`;
  else {
    const counts = new Map<Reason, Set<string>>();
    for (const p of problems) {
      if (p.severity !== code) continue;
      if (!counts.has(p.reason)) counts.set(p.reason, new Set());
      counts.get(p.reason)!.add(p.job);
    }
    summary = [...counts].map(([r, jobs]) => `${jobs.size} ${SUMMARY[r]}`).join(", ");
  }
  const worst = problems.filter((p) => p.severity > 0);
  const troubled = new Set(worst.map((p) => p.job)).size;
  const head = `${STATE_NAMES[code]}: ${noPipe(summary)} | ` + [
    perfItem("jobs", names.length, "", undefined, undefined, 0),
    perfItem("problems", troubled, "", undefined, undefined, 0),
  ].join(" ");
  const perf = measures.flatMap((m) => perfdata(m, N));
  const lines = [head, ...worst.map((p) => noPipe(p.text))];
  if (perf.length) lines.push(`| ${perf.join("\n")}`);
  return {
    code,
    text: lines.join("\n"),
    json: {
      code,
      state: STATE_NAMES[code],
      summary,
      problems: problems.map((p) => ({
        job: p.job,
        state: STATE_NAMES[p.severity],
        reason: p.reason,
        text: p.text,
      })),
      jobs: measures.map((m) => ({
        job: m.job,
        state: STATE_NAMES[
          problems.filter((p) => p.job === m.job).reduce<number>(
            (c, p) => Math.max(c, p.severity),
            0,
          )
        ],
        age: m.age ?? null,
        sla_limit: m.critAge,
        failures: m.failures,
        last_error: m.lastError ?? null,
        last_duration: m.duration ?? null,
        last_bytes: m.bytes ?? null,
      })),
    },
  };
}

/** Reads the config and the status file; every failure to do so is UNKNOWN with its reason. */
export async function check(configFile: string, now = Date.now()): Promise<CheckResult> {
  let config: SchedulerConfig;
  try {
    config = await loadSchedulerConfig(configFile);
  } catch (e) {
    return unknown(errorMessage(e));
  }
  const statusFile = config.statusFile;
  let text: string;
  let mtime: number;
  try {
    text = await Deno.readTextFile(statusFile);
    mtime = (await Deno.stat(statusFile)).mtime?.getTime() ?? 0;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return unknown(`No status file found at ${statusFile}`, { status_file: statusFile });
    }
    return unknown(`Cannot read status file ${statusFile}: ${errorMessage(e)}`);
  }
  const stale = staleAfter(config.statusInterval);
  if (now - mtime > stale * 1000) {
    const summary = `Status file is older than ${spoken(stale)}`;
    return {
      code: 2,
      text: `CRITICAL: ${summary}`,
      json: {
        code: 2,
        state: "CRITICAL",
        summary,
        problems: [],
        jobs: [],
        status_file: statusFile,
      },
    };
  }
  if (text.trim() === "") return unknown(`Status file ${statusFile} is empty`);
  let entries: Record<string, unknown>[];
  try {
    const data = YAML.parse(text);
    if (!Array.isArray(data)) throw new Error("not a list of jobs");
    data.forEach((e, i) => {
      if (e === null || typeof e !== "object" || typeof e.job !== "string") {
        throw new Error(`entry ${i + 1} has no job name`);
      }
    });
    entries = data;
  } catch (e) {
    return unknown(
      `Status file ${statusFile} is unreadable: ${errorMessage(e).split("\n")[0]}`,
    );
  }
  const result = evaluate(config, entries, now / 1000);
  result.json.status_file = statusFile;
  return result;
}
