/**
 * Command interpreter of the scheduler's telnet shell (spec 6.1, design D13). Kept free of
 * sockets and of the daemon: it talks to the scheduler only through `SchedulerControl`, so
 * the exact output can be tested with a plain object.
 */
import { type Column, renderTable } from "../util/table.ts";
import { formatDateTime, formatDuration } from "../util/format.ts";
import { errorMessage } from "../util/errors.ts";

/** One configured job as the shell shows it (the status data of spec 2.7). */
export interface JobView {
  name: string;
  sla: "OK" | "TOO OLD";
  status: string;
  lastTime?: Date;
  /** Already sorted by the caller (by interval, spec 4.8). */
  lastTags: string[];
  /** Seconds. */
  lastDuration?: number;
  nextTime?: Date;
  nextTags: string[];
}

/** What the daemon offers the shell. */
export interface SchedulerControl {
  /** All configured jobs. */
  jobs(): JobView[];
  /** Trigger an immediate run; false = unknown job. */
  runJob(name: string): boolean;
  /** Number of jobs triggered. */
  runAll(): number;
  /** Human result line, e.g. "reloaded: 2 jobs added" or an error text. */
  reload(): Promise<string>;
  workers(): { limit: number; busy: number };
}

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
];

const HELP = [
  "Commands:",
  "  jobs [REGEX]  show jobs, only those whose name matches REGEX if given",
  "  status        count jobs per status, show worker usage",
  "  run JOB       start a backup of JOB now",
  "  runall        start a backup of every job now",
  "  reload        re-read the configuration",
  "  help          show this list",
  "  quit          close the connection",
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

/** V8 says "Invalid regular expression: /(/: Unterminated group"; keep only the reason. */
function regexReason(e: unknown): string {
  const msg = errorMessage(e);
  const m = /^Invalid regular expression: \/.*\/[a-z]*: (.*)$/s.exec(msg);
  return m ? m[1] : msg;
}

/** renderTable (linear in the rows), after giving the daemon's timers a turn. */
export async function renderLongTable(columns: Column[], rows: string[][]): Promise<string> {
  await new Promise((resolve) => setTimeout(resolve, 0));
  return renderTable(columns, rows);
}

async function jobsCommand(args: string[], control: SchedulerControl): Promise<ShellResult> {
  if (args.length > 1) return lines("Usage: jobs [REGEX]");
  let filter: RegExp | undefined;
  if (args.length === 1) {
    try {
      filter = new RegExp(args[0]);
    } catch (e) {
      return lines(`invalid regular expression: ${regexReason(e)}`);
    }
  }
  const jobs = control.jobs()
    .filter((j) => !filter || filter.test(j.name))
    .sort((a, b) => byString(a.name, b.name));
  const rows = jobs.map((j) => [
    j.name,
    j.sla,
    orDash(j.status),
    j.lastTime ? formatDateTime(j.lastTime) : "-",
    orDash(j.lastTags.join(",")),
    j.lastDuration === undefined ? "-" : formatDuration(j.lastDuration),
    j.nextTime ? formatDateTime(j.nextTime) : "-",
    orDash(j.nextTags.join(",")),
  ]);
  return lines(await renderLongTable(JOB_COLUMNS, rows), `${jobs.length} jobs shown`);
}

function statusCommand(args: string[], control: SchedulerControl): ShellResult {
  if (args.length > 0) return lines("Usage: status");
  const counts = new Map<string, number>();
  for (const job of control.jobs()) {
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
        return statusCommand(args, control);
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
