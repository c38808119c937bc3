/**
 * The command line, 2.1-compatible (spec 1): `backy [-v] [-l LOGFILE] [-b DIR] COMMAND ...`.
 * Exit codes (design D8): 0 success, 1 failure with `Error: <message>` on stderr.
 */
import { Command, CommanderError, Option } from "@commander-js/extra-typings";
import { resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger, setupLogging, stopLogging } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { resolveSpec } from "../repo/spec.ts";
import { backup } from "../backup/backup.ts";
import { restore } from "../backup/restore.ts";
import { expireJob } from "../backup/expire.ts";
import { loadSchedulerConfig } from "../config/scheduler_config.ts";
import { runScheduler } from "../scheduler/daemon.ts";
import { check } from "../scheduler/check.ts";
import { planJson, planRuns, planTable } from "../scheduler/plan.ts";
import { init } from "./init.ts";
import { statusJson, statusTable } from "./status.ts";
import { print, printErr } from "./output.ts";

export const VERSION = "3.0.0";
const DEFAULT_CONFIG = "/etc/backy.conf";

/** Options of the whole program, given before the subcommand. */
interface Globals {
  verbose?: boolean;
  logfile?: string;
  backupdir: string;
}

/** Thrown by actions that have already printed their result and want a specific exit code. */
export class ExitCode extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

async function openJob(g: Globals): Promise<JobDir> {
  return await JobDir.open(g.backupdir);
}

async function warnProblems(job: JobDir) {
  const scan = await job.scan();
  for (const p of scan.problems) printErr(`Warning: ignoring ${p}`);
  return scan.revisions;
}

export function buildProgram(): Command {
  const program = new Command()
    .name("backy")
    .description("Backup and restore for block devices.")
    .version(VERSION, "--version")
    .option("-v, --verbose", "log debug messages")
    .option("-l, --logfile <file>", "log to FILE (reopened when rotated) instead of stdout")
    .option("-b, --backupdir <dir>", "job directory", ".")
    .enablePositionalOptions()
    .exitOverride()
    .showSuggestionAfterError(false)
    .configureOutput({
      writeOut: (s) => print(s.replace(/\n$/, "")),
      writeErr: (s) => printErr(s.replace(/\n$/, "")),
    })
    .action((_opts, cmd) => {
      if (cmd.args.length) {
        cmd.error(`error: unknown command '${cmd.args[0]}'`, {
          exitCode: 1,
          code: "commander.unknownCommand",
        });
      }
      print(program.helpInformation());
    });
  const g = () => program.opts() as Globals;

  program.command("init")
    .description("create a job directory for a source")
    .argument("<type>", "source type: file, ceph-rbd, flyingcircus")
    .argument("<source>", "file: PATH; ceph-rbd: POOL/IMAGE; flyingcircus: POOL/IMAGE,VM[,TOKEN]")
    .option("--backend <backend>", "storage backend: cow or chunked (default: probe for reflink)")
    .action(async (type, source, opts) => {
      await init(g().backupdir, type, source, opts.backend);
    });

  program.command("backup")
    .description("create a new revision tagged with TAGS (comma-separated)")
    .argument("<tags>", "comma-separated tags")
    .action(async (tags) => {
      const list = tags.split(",").map((t) => t.trim()).filter((t) => t.length > 0);
      if (list.length === 0) throw new BackyError("backup needs at least one tag");
      await backup(await openJob(g()), list);
    });

  program.command("restore")
    .description("write a revision to TARGET (file, block device, or - for stdout)")
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .option("-f, --force", "overwrite an existing non-empty file")
    .argument("<target>", "file, block device, or -")
    .action(async (target, opts) => {
      const job = await openJob(g());
      const rev = resolveSpec(await warnProblems(job), opts.revision, job.path);
      await restore(job, rev, target, { force: !!opts.force });
    });

  program.command("find")
    .description("print the path of a revision's image file")
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .action(async (opts) => {
      const job = await openJob(g());
      const rev = resolveSpec(await warnProblems(job), opts.revision, job.path);
      if (rev.backend === "chunked") {
        throw new BackyError(
          `revision ${rev.id} is stored in the chunked backend and has no image file; ` +
            `use 'backy restore -r ${rev.id} -' to stream it`,
        );
      }
      print(job.imagePath(rev.id));
    });

  program.command("status")
    .description("show the revisions of the job")
    .option("--json", "print the revisions as JSON (trust, verification, complete or not)")
    .action(async (opts) => {
      const job = await openJob(g());
      const revisions = await warnProblems(job);
      print(opts.json ? statusJson(revisions) : statusTable(revisions).replace(/\n$/, ""));
    });

  program.command("expire")
    .description("apply the job's retention schedule now and remove unreferenced chunks")
    .action(async () => {
      const r = await expireJob(await openJob(g()));
      logger().info("Expiry done", { retagged: r.retagged, removed: r.removed.length });
    });

  program.command("scheduler")
    .description("run the scheduler daemon in the foreground")
    .option("-c, --config <file>", "configuration file", DEFAULT_CONFIG)
    .addOption(
      new Option("--log-format <format>", "log lines as text or as JSON objects")
        .choices(["text", "json"] as const).default("text" as const),
    )
    .action(async (opts) => {
      await runScheduler(opts.config, VERSION);
    });

  const checkCommand = program.command("check")
    .description("monitoring plugin (Nagios/Icinga) over the scheduler's status file")
    .option("-c, --config <file>", "configuration file", DEFAULT_CONFIG)
    .option("--json", "print the verdict as JSON for scripts (same exit codes)")
    .action(async (opts) => {
      const r = await check(opts.config);
      print(opts.json ? JSON.stringify(r.json, null, 2) : r.text);
      if (r.code !== 0) throw new ExitCode(r.code);
    });
  // A monitoring plugin reports usage errors as UNKNOWN (3) on stdout: Nagios shows stdout,
  // and exit 1 with nothing there would read as WARNING "(No output)".
  checkCommand
    .configureOutput({
      writeOut: (s) => print(s.replace(/\n$/, "")),
      writeErr: (s) => print(`UNKNOWN: ${s.replace(/^error: /, "").split("\n")[0]}`),
    })
    .exitOverride((e) => {
      throw e.exitCode === 0 ? e : new CommanderError(3, e.code, e.message);
    });

  program.command("plan")
    .description("show the next planned runs per job without running anything")
    .option("-c, --config <file>", "configuration file", DEFAULT_CONFIG)
    .option("--now <time>", "plan as if it were TIME (ISO 8601, UTC unless an offset is given)")
    .option("-n <count>", "runs per job", "3")
    .option("--json", "print the runs as JSON")
    .argument("[jobs...]", "only these jobs")
    .action(async (jobs, opts) => {
      const config = await loadSchedulerConfig(opts.config);
      for (const j of jobs) {
        if (!config.jobs[j]) throw new BackyError(`unknown job '${j}' in ${opts.config}`);
      }
      let now = Date.now() / 1000;
      if (opts.now !== undefined) {
        const text = /[zZ]|[+-]\d\d:?\d\d$/.test(opts.now) ? opts.now : `${opts.now}Z`;
        const t = Date.parse(text.replace(" ", "T"));
        if (Number.isNaN(t)) throw new BackyError(`invalid --now time '${opts.now}'`);
        now = t / 1000;
      }
      const n = Number(opts.n);
      if (!Number.isInteger(n) || n < 1) throw new BackyError(`-n must be a positive integer`);
      const runs = planRuns(config, now, n, jobs);
      print(opts.json ? planJson(runs) : planTable(runs));
    });

  // Only the root takes stray words, to name an unknown command (subcommands were created
  // above and keep commander's strict default).
  program.allowExcessArguments(true);
  return program;
}

/** Where console log records go: never into data or machine-read output on stdout. */
function consoleFor(command: string, args: readonly string[]): "stdout" | "stderr" {
  if (
    command === "backup" || command === "init" || command === "scheduler" || command === "expire"
  ) {
    return "stdout";
  }
  if (command === "restore" && args.at(-1) !== "-") return "stdout";
  return "stderr";
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  let logfile: string | undefined;
  program.hook("preAction", (_this, action) => {
    const opts = program.opts() as Globals;
    opts.backupdir = resolve(opts.backupdir);
    logfile = opts.logfile;
    // The scheduler's lines always carry time and level (a journal must tell errors apart).
    const daemon = action.name() === "scheduler";
    setupLogging({
      verbose: !!opts.verbose,
      logfile: opts.logfile,
      console: consoleFor(action.name(), action.args),
      format: daemon ? (action.opts() as { logFormat?: "text" | "json" }).logFormat : "message",
    });
    if (logfile) logger().info(`$ backy ${argv.join(" ")}`);
  });
  const log = logger();
  try {
    await program.parseAsync(argv, { from: "user" });
    if (logfile) log.info("Backy operation complete.");
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.exitCode;
    }
    if (e instanceof ExitCode) return e.code;
    printErr(`Error: ${errorMessage(e)}`);
    if (!(e instanceof BackyError)) {
      log.error("Unexpected error", { stack: (e as Error)?.stack ?? String(e) });
      if ((program.opts() as Globals).verbose) printErr((e as Error)?.stack ?? "");
    }
    if (logfile) {
      log.error(`Error: ${errorMessage(e)}`);
      log.error("Backy operation failed.");
    }
    return 1;
  } finally {
    stopLogging();
  }
}
