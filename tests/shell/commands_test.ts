import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { execute, renderLongTable } from "../../src/shell/commands.ts";
import { renderTable } from "../../src/util/table.ts";
import { FakeControl, manyJobs, sampleJobs } from "./fake.ts";

const text = (...lines: string[]) => lines.map((l) => `${l}\n`).join("");

const RULE =
  "+---------+---------+---------+---------------------+--------------+----------+---------------------+-----------+";
const HEADER =
  "| Job     | SLA     | Status  | Last Backup (UTC)   | Last Tags    | Last Dur | Next Backup (UTC)   | Next Tags |";

Deno.test("jobs: table sorted by name, missing values as -, count line", async () => {
  const result = await execute("jobs", new FakeControl(sampleJobs()));
  assertEquals(result.close, false);
  assertEquals(
    result.output,
    text(
      RULE,
      HEADER,
      RULE,
      "| app     | OK      | waiting | 2024-02-29 23:59:59 | hourly       |  845.0 s | -                   | -         |",
      "| db-main | TOO OLD | -       | -                   | -            |        - | 2024-03-01 11:30:00 | hourly    |",
      "| web01   | OK      | waiting | 2024-03-01 10:00:00 | daily,weekly |   12.3 s | 2024-03-02 10:00:05 | daily     |",
      RULE,
      "3 jobs shown",
    ),
  );
});

Deno.test("jobs REGEX: searches anywhere in the name", async () => {
  const control = new FakeControl(sampleJobs());
  const result = await execute("  jobs   b0  ", control);
  assertEquals(
    result.output,
    text(
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+",
      "| Job   | SLA | Status  | Last Backup (UTC)   | Last Tags    | Last Dur | Next Backup (UTC)   | Next Tags |",
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+",
      "| web01 | OK  | waiting | 2024-03-01 10:00:00 | daily,weekly |   12.3 s | 2024-03-02 10:00:05 | daily     |",
      "+-------+-----+---------+---------------------+--------------+----------+---------------------+-----------+",
      "1 jobs shown",
    ),
  );
  assertEquals(
    (await execute("jobs ^(app|db)", control)).output.split("\n").at(-2),
    "2 jobs shown",
  );
});

Deno.test("jobs: no match shows the header only", async () => {
  const result = await execute("jobs nomatch", new FakeControl(sampleJobs()));
  assertEquals(
    result.output,
    text(
      "+-----+-----+--------+-------------------+-----------+----------+-------------------+-----------+",
      "| Job | SLA | Status | Last Backup (UTC) | Last Tags | Last Dur | Next Backup (UTC) | Next Tags |",
      "+-----+-----+--------+-------------------+-----------+----------+-------------------+-----------+",
      "0 jobs shown",
    ),
  );
});

Deno.test("jobs: invalid regex and too many arguments", async () => {
  const control = new FakeControl(sampleJobs());
  assertEquals(
    await execute("jobs (", control),
    { output: "invalid regular expression: Unterminated group\n", close: false },
  );
  assertEquals(
    await execute("jobs [z-a]", control),
    { output: "invalid regular expression: Range out of order in character class\n", close: false },
  );
  assertEquals(await execute("jobs a b", control), {
    output: "Usage: jobs [REGEX]\n",
    close: false,
  });
});

Deno.test("status: jobs per status and worker usage", async () => {
  assertEquals(
    (await execute("status", new FakeControl(sampleJobs()))).output,
    text(
      "+---------+---+",
      "| Status  | # |",
      "+---------+---+",
      "| -       | 1 |",
      "| waiting | 2 |",
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
        "  jobs [REGEX]  show jobs, only those whose name matches REGEX if given",
        "  status        count jobs per status, show worker usage",
        "  run JOB       start a backup of JOB now",
        "  runall        start a backup of every job now",
        "  reload        re-read the configuration",
        "  help          show this list",
        "  quit          close the connection",
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
  control.jobs = () => {
    throw new Error("status not ready");
  };
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
    "| vm00000 | OK  | waiting | 2024-01-01 00:00:00 | daily     |    0.0 s | 2024-01-02 00:00:00 | daily,weekly |",
  );
  assertEquals(
    output[2002],
    "| vm01999 | OK  | waiting | 2024-01-01 00:00:19 | daily     |  199.9 s | 2024-01-02 00:00:00 | daily,weekly |",
  );
  assertEquals(output[2003], output[0]);
  assertEquals(output[2004], "2000 jobs shown");
  assert(output.every((l, i) => i > 2003 || l.length === output[0].length));
});
