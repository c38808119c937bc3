/**
 * The command line, 2.1-compatible (spec 1): `backy [-v] [-l LOGFILE] [-b DIR] COMMAND ...`.
 * Exit codes (design D8): 0 success, 1 failure with `Error: <message>` on stderr, 2 usage
 * error (`check`: 3, Nagios UNKNOWN, on stdout), 128+N when stopped by signal N.
 */
import { Command, CommanderError, Option } from "@commander-js/extra-typings";
import { join, resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger, setupLogging, stopLogging } from "../util/log.ts";
import { JobDir } from "../repo/jobdir.ts";
import { resolveSpec } from "../repo/spec.ts";
import { BACKENDS, storeFor } from "../store/store.ts";
import { backup } from "../backup/backup.ts";
import { restore } from "../backup/restore.ts";
import { expireJob } from "../backup/expire.ts";
import { loadSchedulerConfig } from "../config/scheduler_config.ts";
import { SOURCE_TYPES, sourceFromCli } from "../repo/jobconfig.ts";
import { init, initFromBucket, redactArgv, s3SettingsFor } from "./init.ts";
import { changeTags, checkTags, parseTags } from "../backup/tags.ts";
import { verify } from "../backup/scrub.ts";
import { parseDuration, parseSize } from "../config/duration.ts";
import { formatBytes } from "../util/format.ts";
import { completionScript, SHELLS } from "./completion.ts";
import { watchInterrupts } from "./interrupt.ts";
import {
  CHECK_USAGE_EXIT,
  globalOptionHint,
  unknownOptionFlag,
  USAGE_EXIT,
  UsageError,
} from "./usage.ts";
import { refuseTerminal } from "../util/progress.ts";
import { statusJson, statusTable } from "./status.ts";
import { print, printErr } from "./output.ts";
import { mountedImage } from "../mount/mountinfo.ts";
import { isComplete } from "../repo/revision.ts";

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
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => print(s.replace(/\n$/, "")),
      writeErr: (s) => printErr(s.replace(/\n$/, "")),
    })
    .action((_opts, cmd) => {
      // commander's own message, with its "(Did you mean ...?)" for typos.
      if (cmd.args.length) (cmd as unknown as { unknownCommand(): never }).unknownCommand();
      print(program.helpInformation());
    });
  const g = () => program.opts() as Globals;

  program.command("init")
    .description("create a job directory for a source (or for a job kept in an s3 bucket)")
    .argument("<type>", "source type: file, ceph-rbd, flyingcircus; or s3 (a job in a bucket)")
    .argument(
      "<source>",
      "file: PATH; ceph-rbd: POOL/IMAGE; flyingcircus: POOL/IMAGE,VM[,TOKEN]; s3: BUCKET/JOB",
    )
    .option(
      "--backend <backend>",
      "storage backend: cow, chunked or s3 (default: probe for reflink)",
    )
    .option("--bucket <bucket>", "s3 backend: the bucket (default: global.s3 of the config)")
    .option("-c, --config <file>", "scheduler config whose global.s3 to use", DEFAULT_CONFIG)
    .action(async (type, source, opts) => {
      if (type === "s3") {
        const [bucket, job, ...rest] = source.split("/");
        if (!bucket || !job || rest.length) {
          throw new UsageError("init s3 needs BUCKET/JOB (the job's name in the bucket)");
        }
        const s3 = await s3SettingsFor(opts.config, bucket, job);
        await initFromBucket(g().backupdir, s3!);
        return;
      }
      if (!(SOURCE_TYPES as readonly string[]).includes(type)) {
        throw new UsageError(
          `unknown source type '${type}' (known: ${SOURCE_TYPES.join(", ")}, s3)`,
        );
      }
      if (
        opts.backend !== undefined && !(BACKENDS as readonly string[]).includes(opts.backend)
      ) {
        throw new UsageError(`unknown backend '${opts.backend}' (known: ${BACKENDS.join(", ")})`);
      }
      if (opts.bucket !== undefined && opts.backend !== "s3") {
        throw new UsageError("--bucket goes with --backend s3");
      }
      try {
        sourceFromCli(type, source);
      } catch (e) {
        throw new UsageError(errorMessage(e));
      }
      const s3 = opts.backend === "s3" ? await s3SettingsFor(opts.config, opts.bucket) : undefined;
      await init(g().backupdir, type, source, opts.backend, s3);
    });

  program.command("pull")
    .description("s3 jobs: bring the job directory up to date with the bucket")
    .action(async () => {
      const job = await openJob(g());
      const store = storeFor(job);
      if (!store.pull) {
        throw new BackyError(`${job.path} uses the ${store.backend} backend; pull is for s3 jobs`);
      }
      const r = await store.pull!();
      print(`${r.fetched} revision(s) fetched, ${r.removed} removed, ${r.published} published`);
    });

  program.command("backup")
    .description("create a new revision tagged with TAGS (comma-separated)")
    .argument("<tags>", "comma-separated tags; tags outside the job's schedule need 'manual:'")
    .option("-f, --force", "accept tags the job's schedule does not know (expiry removes them)")
    .action(async (tags, opts) => {
      const list = tags.split(",").map((t) => t.trim()).filter((t) => t.length > 0);
      if (list.length === 0) throw new UsageError("backup needs at least one tag");
      const job = await openJob(g());
      checkTags(job, parseTags(list.join(",")), !!opts.force);
      await backup(job, list);
    });

  program.command("tags")
    .description("add, remove or set the tags of a revision (e.g. to pin it with manual:...)")
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .option("-f, --force", "accept tags the job's schedule does not know (expiry removes them)")
    .argument("<action>", "add, remove or set")
    .argument("<tags>", "comma-separated tags")
    .action(async (action, tags, opts) => {
      const job = await openJob(g());
      const rev = await changeTags(job, opts.revision, action, parseTags(tags), !!opts.force);
      print(`${rev.id} ${rev.tags.join(",")}`);
    });

  program.command("restore")
    .description(
      "write a revision to TARGET: a file, a block device, - (stdout) or rbd:POOL/IMAGE (Ceph)",
    )
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .option("-f, --force", "overwrite an existing non-empty file or Ceph image")
    .argument(
      "<target>",
      "file, block device, - for stdout, or rbd:POOL/IMAGE for a new Ceph image",
    )
    .action(async (target, opts) => {
      if (target === "-") refuseTerminal(Deno.stdout, "restore -");
      const job = await openJob(g());
      const rev = resolveSpec(await warnProblems(job), opts.revision, job.path);
      await restore(job, rev, target, { force: !!opts.force });
    });

  program.command("verify")
    .description("re-read stored revisions and check every block against its index")
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .option("-a, --all", "every complete revision (shared chunks are read once)")
    .option("--sample <percent>", "check only this share of each revision's blocks, at random")
    .option("--scrub", "stalest revisions first, within a byte budget (what the scheduler runs)")
    .option("--period <duration>", "scrub: read everything at least once per DURATION", "30d")
    .option("--max-bytes <size>", "scrub: read at most SIZE (e.g. 50G) in this run")
    .action(async (opts) => {
      let samplePct: number | undefined;
      if (opts.sample !== undefined) {
        samplePct = Number(opts.sample);
        if (!(samplePct > 0 && samplePct <= 100)) {
          throw new UsageError(`--sample must be a percentage in (0, 100], not '${opts.sample}'`);
        }
      }
      const period = parseDuration(opts.period);
      if (period === undefined) throw new UsageError(`invalid --period '${opts.period}'`);
      const maxBytes = opts.maxBytes === undefined ? undefined : parseSize(opts.maxBytes);
      if (opts.maxBytes !== undefined && maxBytes === undefined) {
        throw new UsageError(`invalid --max-bytes '${opts.maxBytes}'`);
      }
      const r = await verify(await openJob(g()), {
        spec: opts.revision,
        all: opts.all,
        samplePct,
        scrub: opts.scrub ? { period, maxBytes } : undefined,
      });
      for (const p of r.problems) print(`DAMAGED METADATA: ${p}`);
      for (const v of r.revisions) {
        if (v.skipped) print(`${v.id} not checked: ${v.skipped}`);
        else if (v.damage.length === 0) {
          const part = v.part
            ? `blocks ${v.part.from}-${(v.part.next ?? v.part.count) - 1} of ${v.part.count}` +
              (v.part.next === undefined ? ", the rest read before" : ", the rest next run") +
              ": "
            : "";
          print(`${v.id} OK (${part}${v.checked} blocks, ${formatBytes(v.bytes)} read)`);
        } else {
          print(`${v.id} DAMAGED: ${v.damage.length} block(s); ${v.damage.slice(0, 5).join("; ")}`);
        }
      }
      if (opts.scrub) {
        print(
          `scrubbed ${r.revisions.length} revision(s), ${formatBytes(r.bytes)} read; ` +
            `${r.overdue} not verified within ${opts.period}`,
        );
      }
      const damaged = r.problems.length + r.revisions.filter((v) => v.damage.length).length;
      if (damaged) throw new BackyError(`${damaged} damaged revision(s) in ${g().backupdir}`);
    });

  program.command("find")
    .description("print the path of a revision's image file")
    .option("-r, --revision <spec>", "revision: number, ID, last, tag or ID prefix", "latest")
    .action(async (opts) => {
      const job = await openJob(g());
      const rev = resolveSpec(await warnProblems(job), opts.revision, job.path);
      const image = storeFor(job, rev.backend).imageName(rev.id);
      if (!image) {
        // Served by an active `backy mount` of this job (or of its base directory)?
        const mounted = isComplete(rev) ? await mountedImage(job.path, rev.id) : undefined;
        if (mounted) return print(mounted);
        throw new BackyError(
          `revision ${rev.id} is stored in the ${rev.backend} backend and has no image file; ` +
            `mount the job ('backy -b ${job.path} mount MOUNTPOINT') to get one, or use ` +
            `'backy restore -r ${rev.id} -' to stream it`,
        );
      }
      print(join(job.path, image));
    });

  program.command("mount")
    .description("serve the revisions as read-only image files under MOUNTPOINT (FUSE)")
    .argument("<mountpoint>", "an existing directory")
    .option("-d, --daemon", "run in the background once mounted (log: -l FILE or DIR/backy.log)")
    .option("--all", "the -b directory is a base directory: one folder per job in it")
    .addOption(new Option("--daemon-child").hideHelp())
    .action(async (mountpoint, opts) => {
      const { mountCommand } = await import("./mount.ts");
      await mountCommand(g(), mountpoint, opts);
    });

  program.command("umount")
    .description("unmount a backy mount (also one whose process was killed)")
    .argument("<mountpoint>", "where it is mounted")
    .option("--lazy", "detach it now even if busy; it goes away once no longer used")
    .action(async (mountpoint, opts) => {
      const { umountCommand } = await import("./mount.ts");
      await umountCommand(mountpoint, !!opts.lazy);
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
    .option("-n, --dry-run", "only show which tags and revisions would be removed")
    .action(async (opts) => {
      const r = await expireJob(await openJob(g()), Date.now() / 1000, { dryRun: opts.dryRun });
      if (opts.dryRun) {
        for (const [id, tags] of r.untagged) {
          print(`would remove tags ${tags.join(",")} from ${id}`);
        }
        for (const id of r.removed) print(`would remove revision ${id}`);
        if (r.untagged.size === 0 && r.removed.length === 0) print("nothing to expire");
        return;
      }
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
      const { runScheduler } = await import("../scheduler/daemon.ts");
      await runScheduler(opts.config, VERSION);
    });

  const checkCmd = program.command("check")
    .description("monitoring plugin (Nagios/Icinga) over the scheduler's status file")
    .option("-c, --config <file>", "configuration file", DEFAULT_CONFIG)
    .option("--json", "print the verdict as JSON for scripts (same exit codes)")
    .action(async (opts) => {
      const { check } = await import("../scheduler/check.ts");
      const r = await check(opts.config);
      print(opts.json ? JSON.stringify(r.json, null, 2) : r.text);
      if (r.code !== 0) throw new ExitCode(r.code);
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
      // Loaded per command: what backup and restore never use stays out of their memory.
      const { planJson, planRuns, planTable } = await import("../scheduler/plan.ts");
      const runs = planRuns(config, now, n, jobs);
      print(opts.json ? planJson(runs) : planTable(runs));
    });

  program.command("help")
    .description("show help for COMMAND (or for backy)")
    .argument("[command]", "a command")
    .action((name) => {
      const sub = name === undefined ? program : program.commands.find((c) => c.name() === name);
      if (sub) return print(sub.helpInformation().replace(/\n$/, ""));
      // commander's unknown-command error, with its "(Did you mean ...?)".
      program.args = [name!];
      (program as unknown as { unknownCommand(): never }).unknownCommand();
    });

  program.command("completion")
    .description("print a shell completion script (bash or zsh)")
    .argument("<shell>", `${SHELLS.join(" or ")}; e.g. source <(backy completion bash)`)
    .action((shell) => {
      if (!(SHELLS as readonly string[]).includes(shell)) {
        throw new UsageError(`unknown shell '${shell}' (known: ${SHELLS.join(", ")})`);
      }
      print(completionScript(program, shell as typeof SHELLS[number]));
    });

  // `check` is a monitoring plugin: its usage errors are UNKNOWN (3) on stdout, like its
  // others (Nagios shows stdout; exit 1 with nothing there would read as WARNING).
  checkCmd
    .configureOutput({
      writeErr: (s) => print(s.replace(/\n$/, "")),
      outputError: (s, write) => write(`UNKNOWN: ${s.replace(/^error: /, "")}`),
    })
    .exitOverride((e) => {
      throw e.exitCode === 0 ? e : new CommanderError(CHECK_USAGE_EXIT, e.code, e.message);
    });

  // Only the root takes stray words, to name an unknown command (subcommands were created
  // above and keep commander's strict default).
  program.allowExcessArguments(true);
  return program;
}

/** Where console log records go: never into data or machine-read output on stdout. */
function consoleFor(command: string, args: readonly string[]): "stdout" | "stderr" {
  if (
    command === "backup" || command === "init" || command === "scheduler" ||
    command === "expire" || command === "pull" || command === "mount"
  ) {
    return "stdout";
  }
  if (command === "restore" && args.at(-1) !== "-") return "stdout";
  return "stderr";
}

/** Runs backy with these arguments (without the program name) and returns its exit status. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  let logfile: string | undefined;
  let unwatch = () => {};
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
    if (logfile) logger().info(`$ backy ${redactArgv(argv).join(" ")}`);
    // The scheduler and mount stop cleanly on their own signal handlers.
    if (action.name() !== "scheduler" && action.name() !== "mount") {
      unwatch = watchInterrupts(
        describeCommand(action.name(), action.args, opts.backupdir),
        !!opts.logfile,
      );
    }
  });
  const log = logger();
  try {
    await program.parseAsync(argv, { from: "user" });
    if (logfile) log.info("Backy operation complete.");
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0;
      const flag = unknownOptionFlag(e.message);
      const hint = flag && globalOptionHint(argv, flag);
      const isCheck = e.exitCode === CHECK_USAGE_EXIT;
      if (hint) (isCheck ? print : printErr)(hint);
      return isCheck ? CHECK_USAGE_EXIT : USAGE_EXIT;
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
    return e instanceof UsageError ? USAGE_EXIT : 1;
  } finally {
    unwatch();
    stopLogging();
  }
}

/** What an interrupt stops, in a few words: `backup of /srv/backy/vm1`. */
function describeCommand(command: string, args: readonly string[], dir: string): string {
  switch (command) {
    case "backup":
    case "expire":
      return `${command} of ${dir}`;
    case "restore":
      return `restore from ${dir} to ${args.at(-1) === "-" ? "stdout" : args.at(-1)}`;
    default:
      return command;
  }
}
