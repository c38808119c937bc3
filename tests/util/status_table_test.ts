/** The `status` table (spec 1.5), exact text. */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { statusTable } from "../../src/cli/status.ts";
import type { Revision } from "../../src/repo/revision.ts";

function rev(id: string, iso: string, stats: Revision["stats"], tags: string[] = []): Revision {
  return {
    id,
    timestampUs: Date.parse(iso) * 1000 + 123,
    parent: null,
    stats,
    tags,
    backend: "cow",
    trust: "trusted",
    extra: {},
  };
}

Deno.test("the spec's example: one revision, no stats, no tags", () => {
  assertEquals(
    statusTable([rev("1", "2015-09-01T07:06:47Z", { bytes_written: 0 })]),
    [
      "+---------------------+----+---------+-------+------+",
      "| Date (UTC)          | ID |    Size | Durat | Tags |",
      "+---------------------+----+---------+-------+------+",
      "| 2015-09-01 07:06:47 | 1  | 0 Bytes |   0 s |      |",
      "+---------------------+----+---------+-------+------+",
      "1 revisions containing 0 Bytes data (estimated)",
      "",
    ].join("\n"),
  );
});

Deno.test("several revisions: widths, right-aligned numbers, sorted tags, the sum", () => {
  assertEquals(
    statusTable([
      rev("ed968696-5ab0-4fe0-af1c-14cadab44661", "2015-09-01T07:06:47.9Z", {
        bytes_written: 14868480,
        duration: 31.1,
      }, ["daily", "weekly"]),
      rev("VqB7sDmAhjLx5eyAZqEhVs", "2015-09-02T00:00:00Z", {
        bytes_written: 524280,
        duration: 845,
      }, ["daily"]),
      rev("Z9cRqJ3wNXkH7pLmTa2sYd", "2015-09-03T23:59:59Z", { bytes_written: 1 }, ["hourly"]),
    ]),
    [
      "+---------------------+--------------------------------------+------------+---------+--------------+",
      "| Date (UTC)          | ID                                   |       Size |   Durat | Tags         |",
      "+---------------------+--------------------------------------+------------+---------+--------------+",
      "| 2015-09-01 07:06:47 | ed968696-5ab0-4fe0-af1c-14cadab44661 |  14.18 MiB |  31.1 s | daily,weekly |",
      "| 2015-09-02 00:00:00 | VqB7sDmAhjLx5eyAZqEhVs               | 511.99 kiB | 845.0 s | daily        |",
      "| 2015-09-03 23:59:59 | Z9cRqJ3wNXkH7pLmTa2sYd               |     1 Byte |     0 s | hourly       |",
      "+---------------------+--------------------------------------+------------+---------+--------------+",
      "3 revisions containing 14.68 MiB data (estimated)",
      "",
    ].join("\n"),
  );
});

Deno.test("no revisions: the header and the closing line", () => {
  // (PrettyTable would also close the empty box with a rule; the shared renderer, whose
  // empty `jobs` table is pinned elsewhere, prints the header block only.)
  const lines = statusTable([]).split("\n");
  assertEquals(lines.slice(0, 3), [
    "+------------+----+------+-------+------+",
    "| Date (UTC) | ID | Size | Durat | Tags |",
    "+------------+----+------+-------+------+",
  ]);
  assertEquals(lines.slice(-2), ["0 revisions containing 0 Bytes data (estimated)", ""]);
});
