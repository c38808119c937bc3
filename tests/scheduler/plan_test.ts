/**
 * `backy plan` through the real command: exact tables for a fixed `--now`, with spreads
 * derived by hand (D9: slots anchored at 0001-01-01, spread from MD5 + MT19937).
 *
 *   2015-09-01T00:00:00Z = 735841 days after 0001-01-01, a Tuesday (0001-01-01 is a Monday).
 *   test01: spread 19971 s for a 1 d limit   -> daily slots at 05:32:51
 *           spread 159773 s for a 1 w limit  -> daily slots at 20:22:53 (159773 mod 86400),
 *                                               weekly at Tuesday 20:22:53 (1 d 20:22:53)
 *   test02: spread 36217 s for a 1 d limit   -> daily slots at 10:03:37
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { backy, tempDir } from "../helpers.ts";
import { writeConfig } from "./harness.ts";

/** A complete revision as a scheduler-run backup would have left it (only the `.rev`). */
async function pastRevision(job: string, id: string, timestamp: string, tags: string[]) {
  await Deno.mkdir(job, { recursive: true });
  await Deno.writeTextFile(
    join(job, `${id}.rev`),
    [
      "backend: chunked",
      "parent: null",
      "stats: {bytes_written: 0, duration: 1.5}",
      `tags: [${tags.join(", ")}]`,
      `timestamp: ${timestamp}`,
      `uuid: ${id}`,
      "",
    ].join("\n"),
  );
}

async function setup() {
  const dir = await tempDir("backy-plan-");
  const base = join(dir, "base");
  await Deno.mkdir(base);
  const daily = join(dir, "daily.conf");
  await writeConfig(daily, {
    global: { "base-dir": base },
    schedules: { default: { daily: { interval: "1d", keep: 9 } } },
    jobs: {
      test02: { schedule: "default", source: { type: "file", filename: "/dev/null" } },
      test01: { schedule: "default", source: { type: "file", filename: "/dev/null" } },
    },
  });
  // test01 ran yesterday morning: nothing is missed, it waits for its slot. test02 never ran.
  await pastRevision(join(base, "test01"), "rev1", "2015-08-31 06:00:00.000000+00:00", ["daily"]);
  return { dir, base, daily };
}

Deno.test("backy plan: exact next runs per job for a fixed --now (daily, spreads 19971/36217)", async () => {
  const { dir, daily } = await setup();
  try {
    const r = await backy(["plan", "-c", daily, "--now", "2015-09-01T00:00:00Z"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.equal(
      r.stdout,
      [
        "+--------+---------------------+-------+",
        "| Job    | Next run (UTC)      | Tags  |",
        "+--------+---------------------+-------+",
        "| test01 | 2015-09-01 05:32:51 | daily |",
        "| test01 | 2015-09-02 05:32:51 | daily |",
        "| test01 | 2015-09-03 05:32:51 | daily |",
        // No backup yet: the first one runs at once (its slot is more than 5 minutes away).
        "| test02 | 2015-09-01 00:00:00 | daily |",
        "| test02 | 2015-09-01 10:03:37 | daily |",
        "| test02 | 2015-09-02 10:03:37 | daily |",
        "+--------+---------------------+-------+",
        "",
      ].join("\n"),
    );
    // Same instant in other spellings; a job filter and -n.
    for (const now of ["2015-09-01 00:00:00", "2015-09-01T02:00:00+02:00"]) {
      const again = await backy(["plan", "-c", daily, "--now", now]);
      assert.equal(again.stdout, r.stdout, now);
    }
    const one = await backy([
      "plan",
      "-c",
      daily,
      "--now",
      "2015-09-01T05:32:51Z",
      "-n",
      "1",
      "test01",
    ]);
    assert.equal(
      one.stdout,
      [
        "+--------+---------------------+-------+",
        "| Job    | Next run (UTC)      | Tags  |",
        "+--------+---------------------+-------+",
        "| test01 | 2015-09-02 05:32:51 | daily |", // strictly after --now
        "+--------+---------------------+-------+",
        "",
      ].join("\n"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backy plan: weekly slots coincide with daily ones (spread 159773)", async () => {
  const dir = await tempDir("backy-plan-");
  try {
    const base = join(dir, "base");
    const config = join(dir, "dw.conf");
    await writeConfig(config, {
      global: { "base-dir": base },
      schedules: {
        dw: { weekly: { interval: "1w", keep: 4 }, daily: { interval: "1d", keep: 9 } },
      },
      jobs: { test01: { schedule: "dw", source: { type: "file", filename: "/dev/null" } } },
    });
    await pastRevision(
      join(base, "test01"),
      "rev1",
      "2015-08-31 21:00:00+00:00",
      ["daily", "weekly"],
    );
    const r = await backy(["plan", "-c", config, "--now", "2015-09-01T00:00:00Z", "-n", "8"]);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.split("\n").filter((l) => l.startsWith("| test01"));
    assert.deepEqual(rows, [
      "| test01 | 2015-09-01 20:22:53 | daily,weekly |", // a Tuesday
      "| test01 | 2015-09-02 20:22:53 | daily        |",
      "| test01 | 2015-09-03 20:22:53 | daily        |",
      "| test01 | 2015-09-04 20:22:53 | daily        |",
      "| test01 | 2015-09-05 20:22:53 | daily        |",
      "| test01 | 2015-09-06 20:22:53 | daily        |",
      "| test01 | 2015-09-07 20:22:53 | daily        |",
      "| test01 | 2015-09-08 20:22:53 | daily,weekly |",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backy plan: bad arguments are one error line and exit 1", async () => {
  const { dir, daily } = await setup();
  try {
    const cases: [string[], string][] = [
      [["nope"], `Error: unknown job 'nope' in ${daily}\n`],
      [["--now", "yesterday"], "Error: invalid --now time 'yesterday'\n"],
      [["-n", "0"], "Error: -n must be a positive integer\n"],
    ];
    for (const [args, err] of cases) {
      const r = await backy(["plan", "-c", daily, ...args]);
      assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, {
        code: 1,
        stdout: "",
        stderr: err,
      }, args.join(" "));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
