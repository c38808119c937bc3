/**
 * `backy check` without a daemon: exact plugin output for each state from hand-written
 * status files (empty, truncated, stale by status-interval, a job missing), and usage errors
 * as UNKNOWN on stdout.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { backy, tempDir } from "../helpers.ts";
import { evaluate, perfItem, perfLabel, staleAfter } from "../../src/scheduler/check.ts";
import { parseSchedulerConfig } from "../../src/config/scheduler_config.ts";
import { parsePluginOutput } from "./plugin_output.ts";

const CONFIG = (statusFile: string, extra = "") =>
  `global:\n  base-dir: /nonexistent\n  status-file: ${statusFile}\n${extra}` +
  "schedules:\n  d:\n    daily: {interval: 1d, keep: 3}\n  h:\n    hourly: {interval: 1h, keep: 3}\n" +
  "jobs:\n  vm1: {schedule: d, source: {type: file, filename: /a}}\n" +
  "  vm2: {schedule: h, source: {type: file, filename: /b}}\n";

const NOW = Date.parse("2024-05-01T12:00:00Z") / 1000;

function entry(job: string, fields: Record<string, unknown> = {}) {
  return {
    job,
    sla: "OK",
    status: "waiting",
    last_time: "2024-05-01 11:30:00 UTC",
    last_tags: "daily",
    last_duration: "12.5 s",
    next_time: "2024-05-02 11:30:00 UTC",
    next_tags: "daily",
    sla_overdue: 0,
    failures: 0,
    last_error: "-",
    last_bytes: 1048576,
    distrusted: 0,
    since: "2024-01-01 00:00:00 UTC",
    ...fields,
  };
}

const config = parseSchedulerConfig(CONFIG("/s"), "/etc/backy.conf");

Deno.test("evaluate: OK with perfdata per job", () => {
  const r = evaluate(config, [entry("vm1"), entry("vm2")], NOW);
  assert.equal(r.code, 0);
  assert.equal(
    r.text,
    "OK: 2 jobs within SLA | jobs=2;;;0 problems=0;;;0\n" +
      "| vm1_age=1800s;86400;129600;0\nvm1_failures=0;1;3;0\nvm1_duration=12.5s;;;0\n" +
      "vm1_bytes=1048576B;;;0\nvm2_age=1800s;3600;5400;0\nvm2_failures=0;1;3;0\n" +
      "vm2_duration=12.5s;;;0\nvm2_bytes=1048576B;;;0",
  );
  const out = parsePluginOutput(r.text);
  assert.deepEqual(out.long, []);
  assert.equal(out.perf.length, 10);
});

Deno.test("evaluate: 2.1's SLA text; failures escalate; missing jobs; warnings", () => {
  let r = evaluate(config, [
    entry("vm1", { sla: "TOO OLD", last_time: "2024-04-29 10:00:00 UTC" }),
    entry("vm2"),
  ], NOW);
  assert.equal(r.code, 2);
  assert.deepEqual(r.text.split("\n").slice(0, 2), [
    "CRITICAL: 1 jobs not within SLA | jobs=2;;;0 problems=1;;;0",
    "vm1 (last time: 2024-04-29 10:00:00 UTC)",
  ]);
  r = evaluate(config, [
    entry("vm1", { failures: 3, last_error: "source /a does not exist", status: "failing" }),
    entry("vm2", { failures: 1, last_error: "a | b" }),
  ], NOW);
  assert.equal(r.code, 2);
  assert.deepEqual(parsePluginOutput(r.text).long, [
    "vm1: 3 failed runs in a row, last error: source /a does not exist",
    "vm2: 1 failed run in a row (CRITICAL at 3), last error: a / b", // no `|` outside perfdata
  ]);
  assert.equal(r.text.split("\n")[0], "CRITICAL: 1 jobs failing | jobs=2;;;0 problems=2;;;0");
  // A configured job the status file lacks counts (2.1 said OK: 1 jobs within SLA).
  r = evaluate(config, [entry("vm1")], NOW);
  assert.equal(r.code, 2);
  assert.deepEqual(r.text.split("\n").slice(0, 2), [
    "CRITICAL: 1 jobs not in the status file | jobs=2;;;0 problems=1;;;0",
    "vm2: not in the status file (is the scheduler running this configuration?)",
  ]);
  // An empty list: every job is missing, not "OK: 0 jobs".
  assert.equal(
    evaluate(config, [], NOW).text.split("\n")[0],
    "CRITICAL: 2 jobs not in the status file | jobs=2;;;0 problems=2;;;0",
  );
  r = evaluate(config, [
    entry("vm1", { problem: "verification failed: block 0 differs", distrusted: 2 }),
    entry("vm2", {
      last_time: "-",
      last_duration: "-",
      since: "2024-05-01 10:30:00 UTC", // 90 min > the 1 h interval
    }),
  ], NOW);
  assert.equal(r.code, 1);
  assert.deepEqual(r.text.split("\n").slice(0, 4), [
    "WARNING: 1 jobs with failed verification, 1 jobs with distrusted revisions, " +
    "1 jobs without a successful backup | jobs=2;;;0 problems=2;;;0",
    "vm1: verification failed: block 0 differs",
    "vm1: 2 distrusted revisions",
    "vm2: no successful backup since it was configured (2024-05-01 10:30:00 UTC)",
  ]);
  // Never succeeded but configured for less than one interval: fine yet.
  r = evaluate(config, [
    entry("vm1"),
    entry("vm2", { last_time: "-", since: "2024-05-01 11:30:00 UTC" }),
  ], NOW);
  assert.equal(r.code, 0, r.text);
  assert.ok(!r.text.includes("vm2_age"), "no age for a job without a backup");
});

Deno.test("evaluate: damaged revision files and an overdue scrub warn", () => {
  const r = evaluate(config, [
    entry("vm1", { damaged_metadata: 1 }),
    // The default verify-every is 30 days; vm2's stalest revision was proven 40 days ago.
    entry("vm2", { oldest_verified: "2024-03-22 12:00:00 UTC" }),
  ], NOW);
  assert.equal(r.code, 1);
  assert.deepEqual(r.text.split("\n").slice(0, 3), [
    "WARNING: 1 jobs with damaged revision files, 1 jobs not scrubbed within verify-every " +
    "| jobs=2;;;0 problems=2;;;0",
    "vm1: 1 unreadable revision file (see backy verify)",
    "vm2: a revision not verified since 2024-03-22 12:00:00 UTC (scrub overdue)",
  ]);
  // Scrubbing off: no such warning; proven recently: none either.
  const off = { ...config, verifyEvery: 0 };
  assert.equal(
    evaluate(off, [entry("vm1"), entry("vm2", { oldest_verified: "2024-03-22 12:00:00 UTC" })], NOW)
      .code,
    0,
  );
  assert.equal(
    evaluate(
      config,
      [entry("vm1"), entry("vm2", { oldest_verified: "2024-04-22 12:00:00 UTC" })],
      NOW,
    ).code,
    0,
  );
});

Deno.test("perfdata labels and items per the guidelines", () => {
  assert.equal(perfLabel("vm1_age"), "vm1_age");
  assert.equal(perfLabel("vm's=x|y_age"), "'vm''s_x_y_age'");
  assert.equal(perfItem("a", 1.23456, "s", 10, 20, 0), "a=1.235s;10;20;0");
  assert.equal(perfItem("a", 5), "a=5");
  assert.equal(staleAfter(30), 300);
  assert.equal(staleAfter(600), 1800);
});

Deno.test("check CLI: empty, truncated, stale by status-interval, unreadable, usage errors", async () => {
  const dir = await tempDir("backy-checkcli-");
  try {
    const status = join(dir, "status");
    const conf = join(dir, "backy.conf");
    await Deno.writeTextFile(conf, CONFIG(status, "  status-interval: 10m\n"));
    const run = async (...args: string[]) => {
      const r = await backy(["check", "-c", conf, ...args]);
      return { code: r.code, out: r.stdout, err: r.stderr };
    };
    await Deno.writeTextFile(status, "");
    assert.deepEqual(await run(), {
      code: 3,
      out: `UNKNOWN: Status file ${status} is empty\n`,
      err: "",
    });
    // Cut in the middle of the second entry: vm2 is lost, which must not look fine.
    await Deno.writeTextFile(
      status,
      `- job: vm1\n  sla: OK\n  last_time: "-"\n- job: vm2\n  sla: O`,
    );
    let r = await run();
    assert.equal(r.code, 2);
    assert.equal(
      r.out.split("\n")[0],
      "CRITICAL: 1 jobs not within SLA | jobs=2;;;0 problems=1;;;0",
    );
    await Deno.writeTextFile(status, "- job: vm1\n  sla: OK\n- {job");
    r = await run();
    assert.equal(r.code, 3);
    assert.match(r.out, new RegExp(`^UNKNOWN: Status file ${status} is unreadable: `));
    await Deno.writeTextFile(status, "- sla: OK\n");
    assert.equal(
      (await run()).out,
      `UNKNOWN: Status file ${status} is unreadable: entry 1 has no job name\n`,
    );
    // status-interval 10m: 20 minutes old is fresh, 31 minutes stale.
    await Deno.writeTextFile(status, "- job: vm1\n  sla: OK\n- job: vm2\n  sla: OK\n");
    const ago = (s: number) => new Date(Date.now() - s * 1000);
    await Deno.utime(status, ago(1200), ago(1200));
    r = await run();
    assert.equal(r.code, 0, r.out);
    await Deno.utime(status, ago(1860), ago(1860));
    assert.deepEqual(await run(), {
      code: 2,
      out: "CRITICAL: Status file is older than 30 minutes\n",
      err: "",
    });
    await Deno.remove(status);
    assert.deepEqual(await run(), {
      code: 3,
      out: `UNKNOWN: No status file found at ${status}\n`,
      err: "",
    });
    const json = JSON.parse((await run("--json")).out);
    assert.equal(json.code, 3);
    assert.equal(json.state, "UNKNOWN");
    // Usage errors: UNKNOWN with the reason on stdout, exit 3 (Nagios shows stdout).
    assert.deepEqual(await run("--bogus"), {
      code: 3,
      out: "UNKNOWN: unknown option '--bogus'\n",
      err: "",
    });
    const missing = await backy(["check", "-c", join(dir, "nope.conf")]);
    assert.equal(missing.code, 3);
    assert.match(missing.stdout, /^UNKNOWN: .*nope\.conf: cannot read config/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
