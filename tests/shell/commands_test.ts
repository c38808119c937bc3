import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { execute, renderLongTable } from "../../src/shell/commands.ts";
import { renderTable } from "../../src/util/table.ts";
import { FakeControl, manyJobs, sampleJobs } from "./fake.ts";

const text = (...lines: string[]) => lines.map((l) => `${l}\n`).join("");

const RULE =
  "+---------+---------+-----------------------+---------------------+--------------+----------+---------------------+-----------+----------+--------------------------------------------------------------+";
const HEADER =
  "| Job     | SLA     | Status                | Last Backup (UTC)   | Last Tags    | Last Dur | Next Backup (UTC)   | Next Tags | Failures | Last Error                                                   |";

Deno.test("jobs: table sorted by name, missing values as -, running and failing jobs, count", async () => {
  const result = await execute("jobs", new FakeControl(sampleJobs()));
  assertEquals(result.close, false);
  assertEquals(
    result.output,
    text(
      RULE,
      HEADER,
      RULE,
      "| app     | OK      | running (copying 25%) | 2024-02-29 23:59:59 | hourly       |  845.0 s | -                   | -         |        0 | -                                                            |",
      "| db-main | TOO OLD | failing               | -                   | -            |        - | 2024-03-01 11:30:00 | hourly    |        2 | source file /srv/db.img is gone: No such file or director... |",
      "| web01   | OK      | waiting               | 2024-03-01 10:00:00 | daily,weekly |   12.3 s | 2024-03-02 10:00:05 | daily     |        0 | -                                                            |",
      RULE,
      "3 jobs shown",
    ),
  );
});

const jobNames = (output: string) =>
  output.split("\n").filter((l) => /^\| [^ J]/.test(l)).map((l) => l.split("|")[1].trim());

Deno.test("jobs PATTERN: a part of the name, or a glob over the whole name", async () => {
  const control = new FakeControl(sampleJobs());
  const result = await execute("  jobs   b0  ", control);
  assertEquals(
    result.output,
    text(
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+----------+------------+",
      "| Job   | SLA | Status  | Last Backup (UTC)   | Last Tags    | Last Dur | Next Backup (UTC)   | Next Tags | Failures | Last Error |",
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+----------+------------+",
      "| web01 | OK  | waiting | 2024-03-01 10:00:00 | daily,weekly |   12.3 s | 2024-03-02 10:00:05 | daily     |        0 | -          |",
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+----------+------------+",
      "1 jobs shown",
    ),
  );
  const shown = async (pattern: string) =>
    jobNames((await execute(`jobs ${pattern}`, control)).output);
  assertEquals(await shown("a"), ["app", "db-main"]);
  assertEquals(await shown("*-*"), ["db-main"]);
  assertEquals(await shown("[aw]*"), ["app", "web01"]);
  assertEquals(await shown("[!aw]*"), ["db-main"]);
  assertEquals(await shown("we?01"), ["web01"]);
  assertEquals(await shown("web"), ["web01"]); // substring
  assertEquals(await shown("web*"), ["web01"]);
  assertEquals(await shown("web?"), []); // a glob matches the whole name
  // 2.1's regular expressions are gone: this is a (non-matching) glob now, not a regex.
  assertEquals(await shown("^(app|db)"), []);
});

Deno.test("jobs: no match shows the header only", async () => {
  const result = await execute("jobs nomatch", new FakeControl(sampleJobs()));
  assertEquals(
    result.output,
    text(
      "+-----+-----+--------+-------------------+-----------+----------+-------------------+-----------+----------+------------+",
      "| Job | SLA | Status | Last Backup (UTC) | Last Tags | Last Dur | Next Backup (UTC) | Next Tags | Failures | Last Error |",
      "+-----+-----+--------+-------------------+-----------+----------+-------------------+-----------+----------+------------+",
      "0 jobs shown",
    ),
  );
});

Deno.test("jobs: overlong pattern and too many arguments", async () => {
  const control = new FakeControl(sampleJobs());
  assertEquals(
    await execute(`jobs ${"*".repeat(257)}`, control),
    { output: "invalid pattern: pattern too long (at most 256 characters)\n", close: false },
  );
  assertEquals(await execute("jobs a b", control), {
    output: "Usage: jobs [PATTERN]\n",
    close: false,
  });
});

Deno.test("jobs: hostile patterns stay fast (issue 10: no regex on the daemon thread)", async () => {
  // 2,000 jobs with 250-character names; each of these patterns made 2.1's regex search
  // (or a glob compiled to a regex) take exponential or high-polynomial time.
  const jobs = manyJobs(2000).map((j, i) => ({ ...j, job: `${"a".repeat(250)}${i}` }));
  const control = new FakeControl(jobs);
  for (
    const pattern of [
      "^(.|.|.|.)*Z",
      "^a{10}(a|a)*b",
      `*${"a*".repeat(120)}b`,
      "*a*a*a*a*a*a*a*a*b",
    ]
  ) {
    const started = performance.now();
    const out = (await execute(`jobs ${pattern}`, control)).output;
    const ms = performance.now() - started;
    assertEquals(out.split("\n").at(-2), "0 jobs shown", pattern);
    assert(ms < 1000, `${pattern}: ${ms.toFixed(0)} ms`);
  }
});

Deno.test("show JOB: every field, the error in full", async () => {
  const control = new FakeControl(sampleJobs());
  assertEquals(
    (await execute("show db-main", control)).output,
    text(
      "Job:               db-main",
      "Status:            failing",
      "SLA:               TOO OLD (newest backup 200000 s old)",
      "Progress:          -",
      "Running since:     -",
      "Failures in a row: 2",
      "Last error:        source file /srv/db.img is gone: No such file or directory (os error 2)",
      "Last failure:      2024-03-01 11:00:00",
      "Last backup:       -",
      "Last tags:         -",
      "Last duration:     -",
      "Last size:         -",
      "Last success:      -",
      "Next backup:       2024-03-01 11:30:00",
      "Next tags:         hourly",
      "Revisions:         0 (0 distrusted)",
      "Data:              0 Bytes (estimated)",
      "Problem:           -",
    ),
  );
  const app = (await execute("show app", control)).output.split("\n");
  assertEquals(
    app[3],
    "Progress:          copying 25% (1.00 GiB of 4.00 GiB, 50.00 MiB/s, ETA 1:01)",
  );
  assertEquals(app[4], "Running since:     2024-03-01 11:59:00");
  const web = (await execute("show web01", control)).output.split("\n");
  assertEquals(web.slice(11, 13), [
    "Last size:         1.00 MiB",
    "Last success:      2024-03-01 10:00:12",
  ]);
  assertEquals(web[15], "Revisions:         3 (0 distrusted)");
  assertEquals((await execute("show nope", control)).output, "no such job: nope\n");
  assertEquals((await execute("show", control)).output, "Usage: show JOB\n");
});

Deno.test("status: jobs per status and worker usage", async () => {
  assertEquals(
    (await execute("status", new FakeControl(sampleJobs()))).output,
    text(
      "+---------+---+",
      "| Status  | # |",
      "+---------+---+",
      "| failing | 1 |",
      "| running | 1 |",
      "| waiting | 1 |",
      "+---------+---+",
      "1 of 2 workers busy",
    ),
  );
});

Deno.test("run, runall, reload", async () => {
  const control = new FakeControl(sampleJobs());
  assertEquals(await execute("run web01", control), { output: "triggered web01\n", close: false });
  assertEquals(await execute("run nope", control), { output: "no such job: nope\n", close: false });
  assertEquals((await execute("run", control)).output, "Usage: run JOB\n");
  assertEquals((await execute("run a b", control)).output, "Usage: run JOB\n");
  assertEquals(control.triggered, ["web01"]);
  assertEquals((await execute("runall", control)).output, "triggered 3 jobs\n");
  assertEquals(control.triggered.length, 4);
  assertEquals((await execute("reload", control)).output, "reloaded: 2 jobs added\n");
  assertEquals(control.reloads, 1);
});

Deno.test("help, quit, unknown, empty", async () => {
  const control = new FakeControl(sampleJobs());
  assertEquals(
    await execute("help", control),
    {
      output: text(
        "Commands:",
        "  jobs [PATTERN]  show jobs; PATTERN: a glob (*, ?, [a-z]) or a part of the name",
        "  show JOB        everything known about one job",
        "  status          count jobs per status, show worker usage",
        "  run JOB         start a backup of JOB now",
        "  runall          start a backup of every job now",
        "  reload          re-read the configuration",
        "  help            show this list",
        "  quit            close the connection",
      ),
      close: false,
    },
  );
  assertEquals(await execute("quit", control), { output: "Goodbye.\n", close: true });
  assertEquals(await execute("frobnicate x", control), {
    output: "no such command: frobnicate (try help)\n",
    close: false,
  });
  assertEquals(await execute("", control), { output: "", close: false });
  assertEquals(await execute(" \t ", control), { output: "", close: false });
});

Deno.test("a failing control call becomes an error line, not an exception", async () => {
  const control = new FakeControl(sampleJobs());
  control.jobs = () => Promise.reject(new Error("status not ready"));
  control.reload = () => Promise.reject(new Error("config broken"));
  assertEquals(await execute("jobs", control), {
    output: "error: status not ready\n",
    close: false,
  });
  assertEquals(await execute("reload", control), {
    output: "error: config broken\n",
    close: false,
  });
});

Deno.test("long tables are rendered in batches, identical to one renderTable call", async () => {
  const columns = [{ header: "Job" }, { header: "Dur", align: "right" as const }, { header: "T" }];
  // Widest cells sit in different batches of 100 rows; one has wide characters.
  const rows = Array.from({ length: 350 }, (_, i) => [
    i === 250 ? "a-rather-long-job-name" : `j${i}`,
    i === 120 ? "123456.7 s" : `${i}.0 s`,
    i === 30 ? "日本,ä" : "x",
  ]);
  assertEquals(await renderLongTable(columns, rows), renderTable(columns, rows));
  assertEquals(
    await renderLongTable(columns, rows.slice(0, 7)),
    renderTable(columns, rows.slice(0, 7)),
  );
});

Deno.test("jobs with 2,000 jobs: every row, in name order", async () => {
  const jobs = manyJobs(2000).reverse();
  const output = (await execute("jobs", new FakeControl(jobs))).output.split("\n");
  assertEquals(output.length, 2000 + 6); // 3 header lines, rule, count, trailing ""
  assertEquals(
    output[3],
    "| vm00000 | OK  | waiting | 2024-01-01 00:00:00 | daily     |    0.0 s | 2024-01-02 00:00:00 | daily,weekly |        0 | -          |",
  );
  assertEquals(
    output[2002],
    "| vm01999 | OK  | waiting | 2024-01-01 00:00:19 | daily     |  199.9 s | 2024-01-02 00:00:00 | daily,weekly |        0 | -          |",
  );
  assertEquals(output[2003], output[0]);
  assertEquals(output[2004], "2000 jobs shown");
  assert(output.every((l, i) => i > 2003 || l.length === output[0].length));
});
