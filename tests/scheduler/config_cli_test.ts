/**
 * Config validation through the real commands (issue 3): a bad scheduler config is one error
 * line `file:line: key: problem`; `scheduler` and `plan` exit 1 (`Error: ...` on stderr),
 * `check` reports UNKNOWN (exit 3, Nagios text on stdout). The scheduler must not start.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { backy, tempDir } from "../helpers.ts";

const GOOD_TOP = (base: string) => `global:\n  base-dir: ${base}\n  telnet-addrs: ""\n`;
const SCHEDULES = "schedules:\n  default:\n    daily: {interval: 1d, keep: 9}\n";
const JOB = "jobs:\n  test01:\n    schedule: default\n    source: {type: file, filename: /x}\n";

/** name, config text (given the base dir), expected message after `file:` */
const CASES: [string, (base: string) => string, string][] = [
  [
    "unknown key",
    (b) => `${GOOD_TOP(b)}  bogus: 1\n${SCHEDULES}${JOB}`,
    "4: global.bogus: unknown key (expected base-dir, worker-limit, status-file, " +
    "status-interval, telnet-addrs, telnet-port, backup-completed-callback, " +
    "backup-failed-callback, callback-timeout, backup-timeout, critical-failures, " +
    "verify-every, verify-budget, monitoring-group, http-addrs, http-port, http-tokens, http-tls-cert, http-tls-key or s3)",
  ],
  [
    "wrong type",
    (b) => `${GOOD_TOP(b)}  worker-limit: many\n${SCHEDULES}${JOB}`,
    '4: global.worker-limit: expected a positive integer, got string "many"',
  ],
  [
    "missing schedule",
    (b) => `${GOOD_TOP(b)}${SCHEDULES}${JOB.replace("default", "nosuch")}`,
    '9: jobs.test01.schedule: no schedule named "nosuch" (defined: default)',
  ],
  [
    "bad interval",
    (b) => `${GOOD_TOP(b)}${SCHEDULES.replace("1d", "1x")}${JOB}`,
    '6: schedules.default.daily.interval: invalid duration "1x" ' +
    "(expected a positive integer with optional unit w, d, h, m or s)",
  ],
  [
    "duplicate job",
    (b) => `${GOOD_TOP(b)}${SCHEDULES}${JOB}${JOB.slice("jobs:\n".length)}`,
    "11: jobs.test01: duplicate key (first defined at line 8)",
  ],
  [
    "job name escaping the base dir",
    (b) => `${GOOD_TOP(b)}${SCHEDULES}${JOB.replace("test01", "../x")}`,
    '8: jobs."../x": invalid job name (must not contain "/")',
  ],
  [
    "YAML syntax",
    (b) => `${GOOD_TOP(b)}${SCHEDULES.replace("keep: 9}", "keep: 9")}${JOB}`,
    "7: invalid YAML: Flow map in block collection must be sufficiently indented and end with a }",
  ],
];

Deno.test("scheduler, plan and check report a bad config as one line file:line: ...", async (t) => {
  const dir = await tempDir("backy-badconf-");
  try {
    const base = join(dir, "base");
    await Deno.mkdir(base);
    for (const [name, text, message] of CASES) {
      await t.step(name, async () => {
        const file = join(dir, `${name.replaceAll(" ", "-")}.conf`);
        await Deno.writeTextFile(file, text(base));
        const line = `${file}:${message}`;
        for (const cmd of ["scheduler", "plan"]) {
          const r = await backy([cmd, "-c", file]);
          assert.deepEqual(
            { code: r.code, stdout: r.stdout, stderr: r.stderr },
            { code: 1, stdout: "", stderr: `Error: ${line}\n` },
            cmd,
          );
        }
        const r = await backy(["check", "-c", file]);
        assert.deepEqual(
          { code: r.code, stdout: r.stdout, stderr: r.stderr },
          { code: 3, stdout: `UNKNOWN: ${line}\n`, stderr: "" },
        );
        // The scheduler never got as far as taking the lock or writing a status file.
        assert.deepEqual([...Deno.readDirSync(base)], []);
      });
    }

    await t.step("unreadable config file", async () => {
      const file = join(dir, "missing.conf");
      const r = await backy(["scheduler", "-c", file]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^Error: ${file}: cannot read config: .*\\n$`));
      assert.equal(r.stderr.split("\n").length, 2);
      const c = await backy(["check", "-c", file]);
      assert.equal(c.code, 3);
      assert.match(c.stdout, new RegExp(`^UNKNOWN: ${file}: cannot read config: .*\\n$`));
    });

    await t.step("base-dir that does not exist", async () => {
      const file = join(dir, "nobase.conf");
      const missing = join(dir, "nowhere");
      await Deno.writeTextFile(file, `${GOOD_TOP(missing)}${SCHEDULES}${JOB}`);
      const r = await backy(["scheduler", "-c", file]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^Error: base-dir ${missing} is not usable: .*\\n$`));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
