/**
 * Command interpreter of the scheduler's telnet shell (spec 6.1, design D13). Kept free of
 * sockets and of the daemon: it talks to the scheduler only through `SchedulerControl`, so
 * the exact output can be tested with a plain object. Nothing a client sends runs in more
 * than linear time: `jobs` filters with a glob or substring, not 2.1's regular expression.
 */
import { type Column, renderTable } from "../util/table.ts";
import { formatBytes, formatDateTime, formatDuration } from "../util/format.ts";
import { errorMessage } from "../util/errors.ts";
import { nameFilter } from "../util/glob.ts";
import type { JobStatus } from "../status/jobstatus.ts";
import type { SchedulerControl } from "../status/control.ts";
import { formatProgress, percent } from "../status/progress.ts";

export interface ShellResult {
  /** Lines separated (and terminated) by "\n"; empty when nothing is to be printed. */
  output: string;
  /** The client asked to leave: print `output`, then close the connection. */
  close: boolean;
}

const JOB_COLUMNS = [
  { header: "Job" },
  { header: "SLA" },
  { header: "Status" },
  { header: "Last Backup (UTC)" },
  { header: "Last Tags" },
  { header: "Last Dur", align: "right" as const },
  { header: "Next Backup (UTC)" },
  { header: "Next Tags" },
  { header: "Failures", align: "right" as const },
  { header: "Last Error" },
];

/** Errors are cut to this in the table; `show JOB` prints them whole. */
const TABLE_ERROR_WIDTH = 60;

const HELP = [
  "Commands:",
  "  jobs [PATTERN]  show jobs; PATTERN: a glob (*, ?, [a-z]) or a part of the name",
  "  show JOB        everything known about one job",
  "  status          count jobs per status, show worker usage",
  "  run JOB         start a backup of JOB now",
  "  runall          start a backup of every job now",
  "  reload          re-read the configuration",
  "  help            show this list",
  "  quit            close the connection",
];

function lines(...text: string[]): ShellResult {
  return { output: text.map((l) => `${l}\n`).join(""), close: false };
}

function orDash(s: string): string {
  return s === "" ? "-" : s;
}

/** Code-unit order rather than localeCompare: stable across hosts and locales. */
function byString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** renderTable (linear in the rows), after giving the daemon's timers a turn. */
export async function renderLongTable(columns: Column[], rows: string[][]): Promise<string> {
  await new Promise((resolve) => setTimeout(resolve, 0));
  return renderTable(columns, rows);
}

function date(seconds: number | undefined): string {
  return seconds === undefined ? "-" : formatDateTime(new Date(Math.floor(seconds) * 1000));
}

/** The Status column: `running (copying 45.2%)` while progress is known. */
function statusText(j: JobStatus): string {
  if (j.status === "running" && j.progress) {
    return `running (${j.progress.phase} ${percent(j.progress)}%)`;
  }
  return orDash(j.status);
}

function cut(text: string, width: number): string {
  return text.length > width ? `${text.slice(0, width - 3)}...` : text;
}

async function jobsCommand(args: string[], control: SchedulerControl): Promise<ShellResult> {
  if (args.length > 1) return lines("Usage: jobs [PATTERN]");
  let filter: ((name: string) => boolean) | undefined;
  if (args.length === 1) {
    try {
      filter = nameFilter(args[0]);
    } catch (e) {
      return lines(`invalid pattern: ${errorMessage(e)}`);
    }
  }
  const all = await control.jobs();
  const jobs = (filter ? all.filter((j) => filter(j.job)) : all)
    .sort((a, b) => byString(a.job, b.job));
  const rows = jobs.map((j) => [
    j.job,
    j.sla,
    statusText(j),
    date(j.lastTime),
    orDash(j.lastTags.join(",")),
    j.lastDuration === undefined ? "-" : formatDuration(j.lastDuration),
    j.nextTime === undefined ? "-" : date(j.nextTime),
    orDash(j.nextTags.join(",")),
    String(j.failures),
    j.failures > 0 && j.lastError ? cut(j.lastError, TABLE_ERROR_WIDTH) : "-",
  ]);
  return lines(await renderLongTable(JOB_COLUMNS, rows), `${jobs.length} jobs shown`);
}

/** `show JOB`: every field, errors whole, one `key: value` line each. */
async function showCommand(args: string[], control: SchedulerControl): Promise<ShellResult> {
  if (args.length !== 1) return lines("Usage: show JOB");
  const j = (await control.jobs()).find((j) => j.job === args[0]);
  if (!j) return lines(`no such job: ${args[0]}`);
  const rows: [string, string][] = [
    ["Job", j.job],
    ["Status", orDash(j.status)],
    ["SLA", j.slaOverdue > 0 ? `${j.sla} (newest backup ${j.slaOverdue} s old)` : j.sla],
    ["Progress", j.progress ? formatProgress(j.progress) : "-"],
    ["Running since", date(j.runningSince)],
    ["Failures in a row", String(j.failures)],
    ["Last error", j.failures > 0 ? j.lastError ?? "-" : "-"],
    ["Last failure", j.failures > 0 ? date(j.lastFailure) : "-"],
    ["Last backup", date(j.lastTime)],
    ["Last tags", orDash(j.lastTags.join(","))],
    ["Last duration", j.lastDuration === undefined ? "-" : formatDuration(j.lastDuration)],
    ["Last size", j.lastBytes === undefined ? "-" : formatBytes(j.lastBytes)],
    ["Last success", date(j.lastSuccess)],
    ["Next backup", date(j.nextTime)],
    ["Next tags", orDash(j.nextTags.join(","))],
    ["Revisions", `${j.revisions} (${j.distrusted} distrusted)`],
    ["Data", `${formatBytes(j.storedBytes)} (estimated)`],
    ["Problem", j.problem ?? "-"],
  ];
  return lines(...rows.map(([k, v]) => `${`${k}:`.padEnd(19)}${v}`));
}

async function statusCommand(args: string[], control: SchedulerControl): Promise<ShellResult> {
  if (args.length > 0) return lines("Usage: status");
  const jobs = await control.jobs();
  const counts = new Map<string, number>();
  for (const job of jobs) {
    const status = orDash(job.status);
    counts.set(status, (counts.get(status) ?? 0) + 1);
  }
  const rows = [...counts].sort(([a], [b]) => byString(a, b)).map(([s, n]) => [s, String(n)]);
  const { limit, busy } = control.workers();
  return lines(
    renderTable([{ header: "Status" }, { header: "#", align: "right" }], rows),
    `${busy} of ${limit} workers busy`,
  );
}

/**
 * Runs one input line against the scheduler. Never throws: a failing control call becomes
 * an `error: ...` line, since one broken command must not end the session.
 */
export async function execute(line: string, control: SchedulerControl): Promise<ShellResult> {
  const words = line.trim().split(/\s+/).filter((w) => w !== "");
  if (words.length === 0) return { output: "", close: false };
  const [command, ...args] = words;
  try {
    switch (command) {
      case "jobs":
        return await jobsCommand(args, control);
      case "status":
        return await statusCommand(args, control);
      case "show":
        return await showCommand(args, control);
      case "run":
        if (args.length !== 1) return lines("Usage: run JOB");
        return lines(control.runJob(args[0]) ? `triggered ${args[0]}` : `no such job: ${args[0]}`);
      case "runall":
        if (args.length > 0) return lines("Usage: runall");
        return lines(`triggered ${control.runAll()} jobs`);
      case "reload":
        if (args.length > 0) return lines("Usage: reload");
        return lines(await control.reload());
      case "help":
        return lines(...HELP);
      case "quit":
        return { output: "Goodbye.\n", close: true };
      default:
        return lines(`no such command: ${command} (try help)`);
    }
  } catch (e) {
    return lines(`error: ${errorMessage(e)}`);
  }
}
