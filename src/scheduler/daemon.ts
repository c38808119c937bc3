/**
 * `backy scheduler -c CONFIG`: runs every job on time (design D9), writes the status file,
 * serves the telnet shell and the HTTP endpoint, reloads on SIGHUP and stops cleanly on
 * SIGTERM/SIGINT. Everything it creates is readable by its owner only, or by the owner and
 * the configured `monitoring-group` (status file, its own log; D18).
 */
import { join } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger, setLogFilePermissions } from "../util/log.ts";
import { Lock } from "../util/lock.ts";
import { groupId } from "../util/group.ts";
import {
  type HttpConfig,
  type JobConfig,
  loadSchedulerConfig,
  type SchedulerConfig,
} from "../config/scheduler_config.ts";
import { type ShellServer, startShell } from "../shell/telnet.ts";
import type { SchedulerControl } from "../status/control.ts";
import { type HttpServer, startHttp } from "../http/server.ts";
import { type CarriedState, JobRunner } from "./jobrunner.ts";
import type { JobStatus } from "../status/jobstatus.ts";
import { readProgress } from "../status/progress.ts";
import { Semaphore } from "./semaphore.ts";
import { previousState, statusItem, writeStatusFile } from "./statusfile.ts";

const log = logger("scheduler");

export class Scheduler implements SchedulerControl {
  private runners = new Map<string, JobRunner>();
  private workerPool: Semaphore;
  private lock?: Lock;
  private shell?: ShellServer;
  private http?: HttpServer;
  /** Mode and group of the status file and the log file. */
  private fileMode = 0o600;
  private fileGid?: number;
  private statusTimer?: ReturnType<typeof setInterval>;
  private stopped = false;
  private finished: Promise<void>;
  private finish!: () => void;

  constructor(
    private configFile: string,
    private config: SchedulerConfig,
    readonly version: string,
  ) {
    this.workerPool = new Semaphore(config.workerLimit);
    this.finished = new Promise((r) => (this.finish = r));
  }

  static async start(configFile: string, version: string): Promise<Scheduler> {
    const config = await loadSchedulerConfig(configFile);
    const s = new Scheduler(configFile, config, version);
    await s.begin();
    return s;
  }

  private async begin(): Promise<void> {
    const base = this.config.baseDir;
    try {
      if (!(await Deno.stat(base)).isDirectory) throw new Error("not a directory");
    } catch (e) {
      throw new BackyError(`base-dir ${base} is not usable: ${errorMessage(e)}`);
    }
    this.setFilePermissions(this.config);
    const lockPath = join(base, ".lock");
    this.lock = await Lock.tryAcquire(
      lockPath,
      true,
      `another scheduler is already running for ${base} (lock ${lockPath} is held)`,
    );
    // A lock file others can open can be flock'ed by them too (issue 10): owner only.
    await Deno.chmod(lockPath, 0o600).catch(() => {});
    log.info("Scheduler starting", {
      config: this.configFile,
      jobs: Object.keys(this.config.jobs).length,
    });
    const previous = await this.previousStatus();
    for (const job of Object.values(this.config.jobs)) this.addJob(job, previous.get(job.name));
    await this.startShell();
    await this.startHttp();
    this.startStatusLoop();
  }

  /** Failure records the last scheduler left in the status file: a restart forgets none. */
  private async previousStatus(): Promise<Map<string, CarriedState>> {
    try {
      return previousState(await Deno.readTextFile(this.config.statusFile));
    } catch {
      return new Map();
    }
  }

  /** 0600, or 0640 with the monitoring group; a group that does not exist is a config error. */
  private setFilePermissions(config: SchedulerConfig): void {
    const gid = config.monitoringGroup === undefined ? undefined : groupId(config.monitoringGroup);
    this.fileGid = gid;
    this.fileMode = gid === undefined ? 0o600 : 0o640;
    setLogFilePermissions(this.fileMode, gid);
  }

  private addJob(job: JobConfig, carried?: CarriedState): void {
    const r = new JobRunner(job, this.config.baseDir, this.workerPool, () => this.config, carried);
    this.runners.set(job.name, r);
    r.start();
  }

  private async startShell(): Promise<void> {
    if (this.config.telnetAddrs.length === 0) return;
    try {
      this.shell = await startShell({
        addrs: this.config.telnetAddrs,
        port: this.config.telnetPort,
        control: this,
        version: this.version,
        log: {
          debug: (m, p) => log.debug(m, p),
          info: (m, p) => log.info(m, p),
          warn: (m, p) => log.warning(m, p),
        },
        // Only addresses the config names get here; the defaults are loopback anyway.
        allowNonLoopback: true,
      });
    } catch (e) {
      log.error("Telnet shell not started", { error: errorMessage(e) });
    }
  }

  private async startHttp(): Promise<void> {
    const http = this.config.http;
    if (!http) return;
    try {
      this.http = await startHttp({
        config: http,
        control: this,
        version: this.version,
        log: {
          info: (m, p) => log.info(m, p),
          warn: (m, p) => log.warning(m, p),
        },
      });
    } catch (e) {
      log.error("HTTP endpoint not started", { error: errorMessage(e) });
    }
  }

  private startStatusLoop(): void {
    if (this.statusTimer !== undefined) clearInterval(this.statusTimer);
    void this.writeStatus();
    this.statusTimer = setInterval(
      () => void this.writeStatus(),
      this.config.statusInterval * 1000,
    );
  }

  async writeStatus(): Promise<void> {
    const started = performance.now();
    try {
      const runners = [...this.runners.values()];
      await Promise.all(runners.map((r) => (r.running ? undefined : r.refresh())));
      const progress = await this.progressOfRunning(runners);
      const now = Date.now() / 1000;
      const items = runners.map((r) =>
        statusItem(r, r.slaOk(now), () => r.statusAt(now, progress.get(r)))
      ).sort((a, b) => (a.entry.job < b.entry.job ? -1 : 1));
      await writeStatusFile(this.config.statusFile, items, this.fileMode, this.fileGid);
      log.debug("Status file written", {
        jobs: items.length,
        ms: Math.round(performance.now() - started),
      });
      for (const { entry: e } of items) {
        if (e.sla !== "OK") log.warning("SLA violated", { job: e.job, last_time: e.last_time });
      }
    } catch (e) {
      log.error("Cannot write status file", {
        file: this.config.statusFile,
        error: errorMessage(e),
      });
    }
  }

  /** `.progress` of the jobs that are running now (a few files at most). */
  private async progressOfRunning(runners: JobRunner[]) {
    const out = new Map<JobRunner, Awaited<ReturnType<typeof readProgress>>>();
    await Promise.all(
      runners.filter((r) => r.running).map(async (r) => {
        out.set(r, await readProgress(r.dir));
      }),
    );
    return out;
  }

  /** SIGHUP / telnet `reload`: a broken config keeps the running one. */
  async reload(): Promise<string> {
    let next: SchedulerConfig;
    try {
      next = await loadSchedulerConfig(this.configFile);
    } catch (e) {
      log.error("Reload failed, keeping the running configuration", { error: errorMessage(e) });
      return `reload failed, keeping the running configuration: ${errorMessage(e)}`;
    }
    if (next.baseDir !== this.config.baseDir) {
      const msg =
        `base-dir changed (${this.config.baseDir} -> ${next.baseDir}): restart the scheduler`;
      log.error("Reload refused", { reason: msg });
      return `reload refused: ${msg}`;
    }
    try {
      this.setFilePermissions(next);
    } catch (e) {
      log.error("Reload failed, keeping the running configuration", { error: errorMessage(e) });
      return `reload failed, keeping the running configuration: ${errorMessage(e)}`;
    }
    const old = this.config;
    this.config = next;
    let added = 0, changed = 0, removed = 0;
    for (const [name, r] of this.runners) {
      if (!next.jobs[name]) {
        removed++;
        this.runners.delete(name);
        void r.stop(false); // a running backup finishes; the job just ends afterwards
      }
    }
    for (const job of Object.values(next.jobs)) {
      const r = this.runners.get(job.name);
      if (!r) {
        added++;
        this.addJob(job);
      } else if (JSON.stringify(r.cfg) !== JSON.stringify(job)) {
        changed++;
        r.update(job);
      }
    }
    this.workerPool.setLimit(next.workerLimit);
    if (old.statusInterval !== next.statusInterval || old.statusFile !== next.statusFile) {
      this.startStatusLoop();
    }
    if (
      old.telnetPort !== next.telnetPort ||
      old.telnetAddrs.join(",") !== next.telnetAddrs.join(",")
    ) {
      await this.shell?.close();
      this.shell = undefined;
      await this.startShell();
    }
    if (!sameHttp(old.http, next.http)) {
      await this.http?.close();
      this.http = undefined;
      await this.startHttp();
    }
    const msg = `reloaded: ${added} jobs added, ${changed} changed, ${removed} removed`;
    log.info(msg);
    void this.writeStatus();
    return msg;
  }

  async stop(): Promise<void> {
    if (this.stopped) return this.finished;
    this.stopped = true;
    log.info("Scheduler stopping");
    if (this.statusTimer !== undefined) clearInterval(this.statusTimer);
    await Promise.all([...this.runners.values()].map((r) => r.stop(true)));
    await this.shell?.close().catch(() => {});
    await this.http?.close().catch(() => {});
    await this.writeStatus();
    this.lock?.release();
    log.info("Scheduler stopped");
    this.finish();
  }

  wait(): Promise<void> {
    return this.finished;
  }

  // SchedulerControl for the telnet shell and the HTTP endpoint.
  async jobs(): Promise<JobStatus[]> {
    const runners = [...this.runners.values()];
    const progress = await this.progressOfRunning(runners);
    const now = Date.now() / 1000;
    return runners.map((r) => r.statusAt(now, progress.get(r)));
  }

  runJob(name: string): boolean {
    const r = this.runners.get(name);
    if (!r) return false;
    r.runNow();
    return true;
  }

  runAll(): number {
    for (const r of this.runners.values()) r.runNow();
    return this.runners.size;
  }

  workers(): { limit: number; busy: number } {
    return { limit: this.workerPool.limit, busy: this.workerPool.busy };
  }
}

/** Whether two HTTP settings would listen the same way (tokens included). */
function sameHttp(a: HttpConfig | undefined, b: HttpConfig | undefined): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** Runs the daemon in the foreground until SIGTERM/SIGINT; SIGHUP reloads. */
export async function runScheduler(configFile: string, version: string): Promise<void> {
  const s = await Scheduler.start(configFile, version);
  const onStop = () => void s.stop();
  const onHup = () => void s.reload();
  Deno.addSignalListener("SIGTERM", onStop);
  Deno.addSignalListener("SIGINT", onStop);
  Deno.addSignalListener("SIGHUP", onHup);
  try {
    await s.wait();
  } finally {
    Deno.removeSignalListener("SIGTERM", onStop);
    Deno.removeSignalListener("SIGINT", onStop);
    Deno.removeSignalListener("SIGHUP", onHup);
  }
}
