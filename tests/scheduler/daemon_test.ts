/**
 * End-to-end tests of the real scheduler daemon (issue 3): `deno run mod.ts -l LOG scheduler
 * -c CONFIG` as a child process, second-scale schedules against file sources, observed only
 * from outside (job directories, status file, log, /proc, telnet over TCP, `backy check`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { backy, randomBytes, tempDir } from "../helpers.ts";
import { EPOCH_0001, spread } from "../../src/scheduler/schedule.ts";
import {
  alive,
  backyWithin,
  Daemon,
  delay,
  descendants,
  formatRevTime,
  formatStatusTime,
  freePort,
  processesMentioning,
  readRevs,
  readStatus,
  type RevFile,
  RevObserver,
  shell,
  type TestConfig,
  waitFor,
  writeConfig,
} from "./harness.ts";

const MiB = 1024 * 1024;

type Sched = Record<string, { interval: number; keep: number }>;

/** 2 s and 4 s slots: the tests see a dozen runs in well under half a minute. */
const FAST = { short: { interval: "2s", keep: 2 }, long: { interval: "4s", keep: 2 } };
const FAST_S: Sched = { short: { interval: 2, keep: 2 }, long: { interval: 4, keep: 2 } };
const WEEKLY = { weekly: { interval: "1w", keep: 3 } };
const WEEK = 604800;

const now = () => Date.now() / 1000;

/** Runs a step and aborts the test when it fails (later steps build on earlier ones). */
async function step(t: Deno.TestContext, name: string, fn: () => Promise<void>): Promise<void> {
  if (!(await t.step(name, fn))) throw new Error(`step failed: ${name}`);
}

/** First slot of `interval` at or before `t` (slots anchored at 0001-01-01 plus the spread). */
function slotAtOrBefore(t: number, interval: number, sp: number): number {
  const phase = sp % interval;
  return Math.floor((t - EPOCH_0001 - phase) / interval) * interval + phase + EPOCH_0001;
}

/**
 * The tags D9 gives a run: the first run of a job carries every tag (nothing seen yet, the
 * first slot is minutes away at most); later runs carry the tags whose slots coincide with
 * the slot of the smallest interval the run started in.
 */
function expectedTags(rev: RevFile, first: boolean, sched: Sched, sp: number): string[] {
  const tags = Object.keys(sched);
  if (first) return tags.sort();
  const smallest = Math.min(...Object.values(sched).map((s) => s.interval));
  const slot = slotAtOrBefore(rev.ts, smallest, sp);
  return tags.filter((t) => slotAtOrBefore(slot, sched[t].interval, sp) === slot).sort();
}

/**
 * Retention as design D10 states it, written independently of src/: per tag keep the newest
 * `keep` carriers and any carrier not older than `keep x interval`; drop tags no schedule
 * defines (except `manual:`); delete revisions left without tags, never the newest.
 */
function d10(history: RevFile[], sched: Sched, at: number): Map<string, string[]> {
  const newestFirst = [...history].sort((a, b) => b.ts - a.ts);
  const kept = new Map(
    newestFirst.map((
      r,
    ) => [r.id, new Set(r.tags.filter((t) => t in sched || t.startsWith("manual:")))]),
  );
  for (const [tag, { interval, keep }] of Object.entries(sched)) {
    let rank = 0;
    for (const r of newestFirst) {
      if (!r.tags.includes(tag)) continue;
      rank++;
      if (rank > keep && r.ts < at - keep * interval) kept.get(r.id)!.delete(tag);
    }
  }
  const out = new Map<string, string[]>();
  newestFirst.forEach((r, i) => {
    const tags = kept.get(r.id)!;
    if (tags.size > 0 || i === 0) out.set(r.id, [...tags].sort());
  });
  return out;
}

function sameState(a: Map<string, string[]>, b: Map<string, string[]>): boolean {
  if (a.size !== b.size) return false;
  for (const [id, tags] of a) if (b.get(id)?.join(",") !== tags.join(",")) return false;
  return true;
}

/**
 * The scheduler expires after every run, so the final state must be D10 applied to the whole
 * history at the time of the last expiry, which lies between the start of the newest
 * revision and the end of the daemon. Try every moment in that window where the outcome can
 * change. (If the daemon was stopped between a backup and its expiry, the newest revision
 * is unexpired: D10 of the rest plus it unchanged.)
 */
function retentionExplained(
  history: RevFile[],
  actual: Map<string, string[]>,
  sched: Sched,
  until: number,
): boolean {
  const newest = history.at(-1)!;
  const candidates = [newest.ts, until];
  for (const r of history) {
    for (const { interval, keep } of Object.values(sched)) {
      const edge = r.ts + keep * interval;
      if (edge > newest.ts && edge < until) candidates.push(edge - 1e-6, edge + 1e-6);
    }
  }
  for (const at of candidates) {
    if (sameState(d10(history, sched, at), actual)) return true;
    const rest = d10(history.slice(0, -1), sched, at);
    rest.set(newest.id, newest.tags);
    if (sameState(rest, actual)) return true;
  }
  return false;
}

function describeRevs(revs: RevFile[]): string {
  return revs.map((r) => `${formatRevTime(r.ts)} ${r.id} [${r.tags.join(",")}]`).join("\n");
}

async function completeRevs(dir: string): Promise<RevFile[]> {
  return (await readRevs(dir)).filter((r) => r.complete);
}

Deno.test({
  name: "scheduler daemon: slots and tags, retention, telnet, SIGHUP, second instance, SIGTERM",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const dir = await tempDir("backy-daemon-");
    const base = join(dir, "base");
    await Deno.mkdir(base);
    const img = (name: string) => join(dir, `${name}.img`);
    await Deno.writeFile(img("alpha"), randomBytes(3 * MiB, 1));
    await Deno.writeFile(img("beta"), randomBytes(8 * MiB, 2));
    await Deno.writeFile(img("manual"), randomBytes(1 * MiB, 3));
    await Deno.writeFile(img("gamma"), randomBytes(1 * MiB, 4));
    const port = freePort();
    const configFile = join(dir, "backy.conf");
    const statusFile = join(base, "status");
    const config: TestConfig = {
      global: {
        "base-dir": base,
        "worker-limit": 4,
        "status-interval": 1,
        "telnet-addrs": "127.0.0.1",
        "telnet-port": port,
      },
      schedules: { fast: FAST, slow: WEEKLY },
      jobs: {
        alpha: {
          schedule: "fast",
          backend: "chunked",
          source: { type: "file", filename: img("alpha") },
        },
        beta: { schedule: "fast", backend: "cow", source: { type: "file", filename: img("beta") } },
        manual: { schedule: "slow", source: { type: "file", filename: img("manual") } },
      },
    };
    await writeConfig(configFile, config);
    const observer = new RevObserver(base, ["alpha", "beta", "gamma"]).start();
    const daemon = Daemon.start(configFile, join(dir, "scheduler.log"));
    const context = () => daemon.diagnostics();
    try {
      await step(t, "writes the status file with every job at once", async () => {
        const status = await waitFor("status file", async () => {
          const s = await readStatus(statusFile);
          return s?.length === 3 ? s : undefined;
        }, { context });
        assert.deepEqual(status.map((e) => e.job), ["alpha", "beta", "manual"]);
        for (const e of status) {
          // 2.1's keys first, in 2.1's order, then 2.5's sla_overdue and backy 3's own.
          assert.deepEqual(Object.keys(e), [
            "job",
            "sla",
            "status",
            "last_time",
            "last_tags",
            "last_duration",
            "next_time",
            "next_tags",
            "sla_overdue",
            "failures",
            "last_error",
            "last_failure",
            "last_success",
            "last_bytes",
            "revisions",
            "distrusted",
            "damaged_metadata",
            "oldest_verified",
            "stored_bytes",
            "since",
            ...(e.status === "running" ? ["running_since"] : []),
            ...("progress" in e ? ["progress"] : []),
          ]);
        }
        // Only the owner reads it (D18), and so the scheduler's log and job configs.
        const mode = (await Deno.stat(statusFile)).mode! & 0o777;
        assert.equal(mode, 0o600);
      });

      await step(t, "a second scheduler on the same base dir exits at once", async () => {
        const r = await backyWithin(["scheduler", "-c", configFile], 15_000);
        assert.equal(r.code, 1, r.stderr);
        assert.equal(
          r.stderr,
          `Error: another scheduler is already running for ${base} (lock ${base}/.lock is held)\n`,
        );
        assert.ok(r.ms < 5000, `took ${r.ms} ms`);
        assert.ok(alive(daemon.pid) && !daemon.exited, "the first daemon must survive");
      });

      await step(
        t,
        "telnet shell: jobs lists every job, run JOB triggers a backup",
        async () => {
          // `manual` has never run and its weekly slot is far away: it runs at once.
          const first = await waitFor("first revision of manual", async () => {
            const revs = await completeRevs(join(base, "manual"));
            return revs.length === 1 ? revs[0] : undefined;
          }, { context });
          assert.deepEqual(first.tags, ["weekly"]);
          // The daemon learns of it when the run (backup + expire) is over.
          await waitFor("manual's first run in the status file", async () => {
            const e = (await readStatus(statusFile)).find((e) => e.job === "manual");
            return e?.last_time === formatStatusTime(first.ts) && e.status !== "running";
          }, { context });
          const out = await shell(port, ["jobs", "jobs man*", "run manual", "run nosuch"]);
          assert.ok(out.startsWith("backy 3.0.0\nReady.\nbacky> "), out);
          const tables = out.split("backy> ");
          const all = tables[1].split("\n");
          assert.match(
            all[1],
            /^\| Job +\| SLA \| Status +\| Last Backup \(UTC\) +\| Last Tags +\| Last Dur \| Next Backup \(UTC\) +\| Next Tags +\| Failures \| Last Error +\|$/,
          );
          const rows = all.filter((l) => /^\| [a-z]/.test(l)).map((l) =>
            l.split("|").map((c) => c.trim())
          );
          assert.deepEqual(rows.map((r) => r[1]), ["alpha", "beta", "manual"]);
          const man = rows[2];
          assert.equal(man[2], "OK");
          assert.equal(man[4], formatStatusTime(first.ts).slice(0, -4));
          assert.equal(man[5], "weekly");
          assert.match(man[6], /^\d+\.\d s$/);
          // The next weekly slot, computed from the spread (D9), not from the daemon.
          const sp = spread("manual", WEEK);
          const nextSlot = slotAtOrBefore(now(), WEEK, sp) + WEEK;
          assert.equal(man[7], formatStatusTime(nextSlot).slice(0, -4));
          assert.equal(man[8], "weekly");
          assert.deepEqual(man.slice(9, 11), ["0", "-"]); // failures in a row, last error
          assert.ok(all.includes("3 jobs shown"), tables[1]);
          assert.ok(
            tables[2].includes("| manual |") && tables[2].includes("1 jobs shown"),
            tables[2],
          );
          assert.equal(tables[3], "triggered manual\n");
          assert.equal(tables[4], "no such job: nosuch\n");
          const second = await waitFor("the triggered backup of manual", async () => {
            const revs = await completeRevs(join(base, "manual"));
            return revs.length === 2 ? revs[1] : undefined;
          }, { context });
          assert.deepEqual(second.tags, ["weekly"]);
        },
      );

      await step(t, "SIGHUP adds a new job and its revisions appear", async () => {
        config.jobs.gamma = {
          schedule: "fast",
          backend: "chunked",
          source: { type: "file", filename: img("gamma") },
        };
        await writeConfig(configFile, config);
        daemon.signal("SIGHUP");
        await waitFor(
          "reload log line",
          async () => (await daemon.log()).includes("reloaded: 1 jobs added, 0 changed, 0 removed"),
          { context },
        );
        const revs = await waitFor("a revision of gamma", async () => {
          const r = await completeRevs(join(base, "gamma"));
          return r.length ? r : undefined;
        }, { context });
        assert.deepEqual(revs[0].tags, ["long", "short"]);
        await waitFor("gamma in the status file", async () => {
          return (await readStatus(statusFile)).some((e) => e.job === "gamma");
        }, { context });
      });

      await step(
        t,
        "SIGHUP with a config typo keeps the running config and the daemon",
        async () => {
          const broken = structuredClone(config) as unknown as {
            jobs: Record<string, Record<string, unknown>>;
          };
          broken.jobs.gamma = { schedul: "fast", source: config.jobs.gamma.source };
          const { stringify } = await import("yaml");
          const text = stringify(broken);
          const line = text.split("\n").findIndex((l) => l.trim().startsWith("schedul:")) + 1;
          await Deno.writeTextFile(configFile, text);
          const gammaBefore = (await completeRevs(join(base, "gamma"))).length;
          daemon.signal("SIGHUP");
          await waitFor("reload error in the log", async () => {
            const log = await daemon.log();
            return log.includes("Reload failed, keeping the running configuration") &&
              log.includes(`${configFile}:${line}: jobs.gamma.schedul: unknown key`);
          }, { context });
          // Still alive and still running the old config: gamma (valid there) keeps getting backups.
          await waitFor(
            "another revision of gamma",
            async () => (await completeRevs(join(base, "gamma"))).length > gammaBefore,
            { context },
          );
          assert.ok(alive(daemon.pid) && !daemon.exited);
          const status = await readStatus(statusFile);
          assert.deepEqual(status.map((e) => e.job), ["alpha", "beta", "gamma", "manual"]);
          const errors = (await daemon.log()).split("\n").filter((l) => l.includes(" ERROR "));
          assert.equal(errors.length, 1, errors.join("\n"));
        },
      );

      await step(t, "SIGHUP drops a removed job", async () => {
        delete config.jobs.gamma;
        await writeConfig(configFile, config);
        daemon.signal("SIGHUP");
        await waitFor(
          "reload log line",
          async () => (await daemon.log()).includes("reloaded: 0 jobs added, 0 changed, 1 removed"),
          { context },
        );
        await waitFor("gamma gone from the status file", async () => {
          return !(await readStatus(statusFile)).some((e) => e.job === "gamma");
        }, { context });
        // A backup that was running finishes; after that nothing runs for gamma any more.
        await waitFor(
          "no process working on gamma",
          () => processesMentioning(join(base, "gamma")).length === 0,
          { context },
        );
        const count = (await readRevs(join(base, "gamma"))).length;
        await delay(2500); // longer than gamma's 2 s interval
        assert.equal((await readRevs(join(base, "gamma"))).length, count);
      });

      await step(t, "every revision carries the tags of its slot", async () => {
        await waitFor("7 backups of alpha and beta", () => {
          return observer.completed("alpha").length >= 7 && observer.completed("beta").length >= 7;
        }, { timeoutMs: 20_000, context });
        for (const job of ["alpha", "beta", "gamma"]) {
          const seen = [...observer.seen.get(job)!.values()].sort((a, b) => a.ts - b.ts);
          const sp = spread(job, 4);
          seen.forEach((r, i) => {
            assert.deepEqual(
              r.tags,
              expectedTags(r, i === 0, FAST_S, sp),
              `${job} revision ${r.id} at ${formatRevTime(r.ts)} (spread ${sp}):\n${
                describeRevs(seen)
              }`,
            );
          });
        }
      });

      const stoppedAt = await (async () => {
        let at = 0;
        await step(t, "SIGTERM stops quickly and leaves no backup child running", async () => {
          const running = await waitFor("a running backup child", () => {
            const kids = descendants(daemon.pid);
            return kids.some((p) => p.args.includes("backup")) ? kids : undefined;
          }, { intervalMs: 20, context });
          const started = Date.now();
          daemon.signal("SIGTERM");
          const status = await waitFor("daemon exit", () => daemon.status, {
            timeoutMs: 10_000,
            intervalMs: 20,
            context,
          });
          const ms = Date.now() - started;
          at = now();
          assert.equal(status.code, 0);
          assert.ok(ms < 3000, `stopping took ${ms} ms`);
          for (const p of running) assert.ok(!alive(p.pid), `child ${p.pid} ${p.args} survived`);
          assert.deepEqual(processesMentioning(base).map((p) => p.args.join(" ")), []);
          const log = await daemon.log();
          assert.ok(log.includes("Scheduler stopped"), await context());
          // Stopping is no failure: an interrupted backup is logged, not reported as an error.
          const stopLines = log.slice(log.indexOf("Scheduler stopping")).split("\n");
          assert.deepEqual(stopLines.filter((l) => / ERROR /.test(l)), [], await context());
          const out = await daemon.output();
          assert.equal(out.stderr, "");
        });
        return at;
      })();

      await step(t, "retention kept exactly what D10 predicts", async () => {
        await observer.stop();
        for (const job of ["alpha", "beta"]) {
          const history = observer.completed(job);
          const actual = new Map(
            (await completeRevs(join(base, job))).map((r) => [r.id, r.tags] as const),
          );
          const msg = `${job}: history\n${describeRevs(history)}\nremaining\n${
            [...actual].map(([id, tags]) => `${id} [${tags.join(",")}]`).join("\n")
          }`;
          assert.ok(retentionExplained(history, actual, FAST_S, stoppedAt), msg);
          // Not trivially: revisions were removed and tags dropped from survivors.
          assert.ok(actual.size < history.length, msg);
          const carriers = (tag: string) => [...actual.values()].filter((t) => t.includes(tag));
          assert.ok(carriers("short").length >= 2 && carriers("long").length >= 2, msg);
          assert.ok(carriers("short").length < history.length, msg);
          // The images of removed cow revisions are gone with their metadata.
          if (job === "beta") {
            for (const r of history) {
              const present: boolean = await Deno.stat(join(base, job, r.id)).then(
                () => true,
                () => false,
              );
              assert.equal(present, actual.has(r.id), `image of ${r.id}`);
            }
          }
        }
      });

      await step(
        t,
        "an interrupted revision never counts and the next backup removes it",
        async () => {
          const status = await readStatus(statusFile);
          for (const job of ["alpha", "beta"]) {
            const revs = await readRevs(join(base, job));
            const complete = revs.filter((r) => r.complete);
            const newest = complete.at(-1)!;
            for (const r of revs.filter((r) => !r.complete)) {
              assert.ok(r.ts > newest.ts, `incomplete ${r.id} is not the interrupted last run`);
            }
            const entry = status.find((e) => e.job === job)!;
            assert.equal(entry.last_time, formatStatusTime(newest.ts));
            assert.equal(entry.last_tags, newest.tags.includes("long") ? "short,long" : "short");
            const r = await backy(["-b", join(base, job), "backup", "short"]);
            assert.equal(r.code, 0, r.stderr);
            const after = await readRevs(join(base, job));
            assert.deepEqual(after.filter((r) => !r.complete), []);
            assert.equal(after.length, complete.length + 1);
          }
        },
      );
    } finally {
      await observer.stop();
      await daemon.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "scheduler daemon: SIGTERM lets a running expire finish (it deletes revisions)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await tempDir("backy-stop-");
    const base = join(dir, "base");
    await Deno.mkdir(base);
    await Deno.writeFile(join(dir, "a.img"), randomBytes(1 * MiB, 7));
    const configFile = join(dir, "backy.conf");
    await writeConfig(configFile, {
      global: { "base-dir": base, "status-interval": 1, "telnet-addrs": "" },
      schedules: { fast: { short: { interval: "2s", keep: 1 } } },
      jobs: { a: { schedule: "fast", source: { type: "file", filename: join(dir, "a.img") } } },
    });
    const daemon = Daemon.start(configFile, join(dir, "scheduler.log"));
    const context = () => daemon.diagnostics();
    try {
      const expire = await waitFor("a running expire child", () => {
        return descendants(daemon.pid).find((p) => p.args.includes("expire"));
      }, { intervalMs: 5, context });
      daemon.signal("SIGTERM");
      await waitFor("daemon exit", () => daemon.status, { context });
      assert.equal(daemon.status!.code, 0);
      assert.ok(!alive(expire.pid));
      const jobLog = await Deno.readTextFile(join(base, "a", "backy.log"));
      assert.ok(
        jobLog.includes(`[${expire.pid}] INFO Backy operation complete.`),
        `expire ${expire.pid} was interrupted:\n${jobLog}\n${await context()}`,
      );
      assert.ok(!(await daemon.log()).includes("Expiry failed"), await context());
    } finally {
      await daemon.kill();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
