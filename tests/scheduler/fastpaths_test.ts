/**
 * The scheduler's fast paths must never decide differently from the general code they
 * shortcut: the `.rev` reader against parseRevision, the status file writer against a YAML
 * parser, the plan table against renderTable. Fuzzed with a fixed seed.
 */
import assert from "node:assert/strict";
import YAML from "yaml";
import { quickRevision } from "../../src/scheduler/quickrev.ts";
import { parseRevision, type Revision, serializeRevision } from "../../src/repo/revision.ts";
import { type StatusEntry, statusYaml, yamlString } from "../../src/scheduler/statusfile.ts";
import { asciiTable, renderWithCliTable } from "../../src/util/table.ts";

/** xorshift32: deterministic. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(a: readonly T[]): T => a[Math.floor(next() * a.length)],
  };
}

/** What the scheduler takes from a revision, via the full parser. */
function facts(text: string, id: string) {
  const r = parseRevision(text, `${id}.rev`, id);
  const out: Record<string, unknown> = {
    id: r.id,
    timestampUs: r.timestampUs,
    tags: r.tags,
    bytesWritten: r.stats.bytes_written,
    trust: r.trust,
  };
  if (r.stats.duration !== undefined) out.duration = r.stats.duration;
  if (r.verifiedAtUs !== undefined) out.verifiedAtUs = r.verifiedAtUs;
  return out;
}

/** quickRevision either declines or agrees with parseRevision (which must then accept). */
function assertAgrees(text: string, id: string): boolean {
  const quick = quickRevision(text, id);
  if (quick === undefined) return false;
  let full;
  try {
    full = facts(text, id);
  } catch (e) {
    assert.fail(`fast reader accepted a file the parser rejects (${e}):\n${text}`);
  }
  assert.deepEqual({ ...quick }, full, text);
  return true;
}

const TAGS = ["daily", "weekly", "monthly", "manual:before-upgrade", "a-b", "x.y", "_u"];
/** Tags a YAML parser reads as something else than their text unless quoted. */
const AWKWARD = ["01", "null"];

function randomRevision(r: ReturnType<typeof rng>, i: number): Revision {
  const id = r.next() < 0.05 ? "1" : r.pick(["4nH9V74ThJKfBHwQvhEGtM", "asdf", `rev-${i}`]);
  const stats: Revision["stats"] = { bytes_written: r.pick([0, 1048576, 14868480]) };
  const d = r.pick([undefined, 0, 0.2, 31.1, 1e-7, 123456789.5]);
  if (d !== undefined) stats.duration = d;
  if (r.next() < 0.5) stats.blocks = { changed: r.int(9), unchanged: 1, zero: 0 };
  if (r.next() < 0.3) stats.verification = "full";
  const tags = [...TAGS.filter(() => r.next() < 0.3), ...AWKWARD.filter(() => r.next() < 0.05)];
  const rev: Revision = {
    id,
    timestampUs: Math.floor(r.next() * 2e9) * 1e6 + r.int(1e6),
    parent: r.pick([null, "ZGj6KySR6q7bdCXTosSnxW"]),
    stats,
    tags,
    backend: r.pick(["cow", "chunked"] as const),
    trust: r.pick(["trusted", "verified", "distrusted"] as const),
    // Keys of other versions are read past.
    extra: r.pick([{}, {}, {}, { type: "full", server: { name: "b1", url: "http://x:1" } }]),
  };
  if (r.next() < 0.3) rev.verifiedAtUs = Math.floor(r.next() * 2e9) * 1e6 + r.int(1e6);
  if (r.next() < 0.1) rev.error = "verification of revision x failed: 1 of 3 blocks differ";
  return rev;
}

Deno.test("quickRevision reads what backy writes, exactly as parseRevision does", () => {
  const r = rng(7);
  let fast = 0;
  for (let i = 0; i < 2000; i++) {
    const rev = randomRevision(r, i);
    const text = serializeRevision(rev);
    if (assertAgrees(text, rev.id)) fast++;
    else {
      // Only the awkward ones may take the slow path: numeric-looking or null tags, uuid "1".
      assert.ok(
        rev.tags.some((t) => t === "01" || t === "null") || rev.id === "1" || rev.error,
        `declined an ordinary file:\n${text}`,
      );
    }
  }
  assert.ok(fast > 1200, `fast path taken ${fast} of 2000 times`);
});

Deno.test("quickRevision reads 2.1-style flow YAML and naive timestamps", () => {
  const cases: [string, string, Record<string, unknown>][] = [
    [
      "uuid: asdf\ntype: full\ntimestamp: 2015-08-01T20:00:00\nparent: null\n",
      "asdf",
      {
        id: "asdf",
        timestampUs: Date.parse("2015-08-01T20:00:00Z") * 1000,
        tags: [],
        bytesWritten: 0,
        trust: "trusted",
      },
    ],
    [
      "parent: asdf\nstats: {bytes_written: 14868480, duration: 31.1}\ntags: [weekly, daily]\n" +
      "timestamp: 2015-09-01 07:06:47.123456+00:00\nuuid: asdf2\n",
      "asdf2",
      {
        id: "asdf2",
        timestampUs: Date.parse("2015-09-01T07:06:47.123Z") * 1000 + 456,
        tags: ["daily", "weekly"],
        bytesWritten: 14868480,
        duration: 31.1,
        trust: "trusted",
      },
    ],
    [
      "# edit tags with backy tags\ntags:\n- daily\n- manual:x\ntimestamp: 2015-09-01 07:06:47+02:00\n" +
      "stats:\n    bytes_written: 0\n    duration: null\n",
      "r",
      {
        id: "r",
        timestampUs: Date.parse("2015-09-01T05:06:47Z") * 1000,
        tags: ["daily", "manual:x"],
        bytesWritten: 0,
        trust: "trusted",
      },
    ],
  ];
  for (const [text, id, expected] of cases) {
    assert.deepEqual({ ...quickRevision(text, id) }, expected, text);
    assert.deepEqual(facts(text, id), expected, text);
  }
});

Deno.test("quickRevision declines anything it is not sure about", () => {
  const base = "stats:\n  duration: 1.5\ntags:\n  - daily\ntimestamp: 2015-09-01 07:06:47+00:00\n";
  const declined = [
    base.replace("2015-09-01 07:06:47+00:00", "'2015-09-01 07:06:47+00:00'"), // quoted
    base.replace("timestamp: 2015-09-01 07:06:47+00:00", "timestamp: 1441091207.5"), // epoch
    base + "tags: [weekly]\n", // duplicate key
    base.replace("  - daily", "  - &a daily"), // anchor
    base.replace("  - daily", "  - daily # comment"),
    base.replace("  - daily", "  - 01"), // a number to YAML
    base.replace("  - daily", "  - daily:"), // a mapping
    base.replace("tags:\n  - daily", "tags: [a:b]"),
    base.replace("  duration: 1.5", "  duration:\n    x: 1"), // not a number
    base.replace("  duration: 1.5", "  duration: 1.5\n  duration: 2"),
    base.replace("  duration: 1.5", "  duration: 1.5\n bytes_written: 2"), // odd indentation
    base.replace("  duration: 1.5", "\tduration: 1.5"),
    "---\n" + base,
    base + "uuid: other\n", // not this file's id
    base + "trust: maybe\n",
    base + "backend: tape\n",
    base + "error: a: b\n",
    base.replace("tags:\n  - daily", "tags: daily"), // not a list
  ];
  for (const text of declined) assert.equal(quickRevision(text, "r"), undefined, text);
  assert.ok(quickRevision(base, "r"));
});

Deno.test("quickRevision under random corruption: declines or agrees, never accepts garbage", () => {
  const r = rng(11);
  const specials = [
    ..." :#-[]{}'\"\n\t&*!|>%@,0a.~?",
    ": ",
    " #",
    "- ",
    "\n  ",
    "\n- ",
    "\n  - ",
    "null",
    "\ndup: 1",
    "\n---\n",
  ];
  let agreed = 0;
  for (let i = 0; i < 4000; i++) {
    const rev = randomRevision(r, i);
    let text = serializeRevision(rev);
    if (i % 3 === 1) {
      text = `stats: {bytes_written: 1, duration: 2.5}\ntags: [${rev.tags.join(", ")}]\n` +
        `timestamp: 2015-09-01 07:06:47.123456+00:00\nuuid: ${rev.id}\n`;
    }
    for (let k = 1 + r.int(3); k > 0; k--) {
      const at = r.int(text.length);
      const op = r.int(3);
      const c = r.pick(specials);
      text = op === 0
        ? text.slice(0, at) + text.slice(at + 1)
        : op === 1
        ? text.slice(0, at) + c + text.slice(at)
        : text.slice(0, at) + c + text.slice(at + 1);
    }
    if (assertAgrees(text, rev.id)) agreed++;
  }
  // Most mutations break the format; enough survive to show agreement on near-misses.
  assert.ok(agreed > 50, `only ${agreed} mutated files were read fast`);
});

Deno.test("status file text parses back to the entries, and matches YAML.stringify for usual ones", () => {
  const usual: StatusEntry[] = [
    {
      job: "test01",
      sla: "OK",
      status: "",
      last_time: "-",
      last_tags: "-",
      last_duration: "-",
      next_time: "2015-09-01 05:32:51 UTC",
      next_tags: "daily,weekly",
    },
    {
      job: "vm-2.example.com",
      sla: "TOO OLD",
      status: "waiting for worker slot",
      last_time: "2015-08-30 07:06:47 UTC",
      last_tags: "daily",
      last_duration: "31.1 s",
      next_time: "-",
      next_tags: "-",
      problem: "verification failed: block 0 (offset 0): checksum mismatch",
    },
  ];
  assert.equal(statusYaml(usual), YAML.stringify(usual));
  assert.equal(statusYaml([]), YAML.stringify([]));

  const r = rng(3);
  const pool = [
    "a",
    "Z",
    "0",
    "9",
    " ",
    ":",
    "#",
    "-",
    "'",
    '"',
    "\\",
    ",",
    "[",
    "{",
    "&",
    "*",
    "!",
    "|",
    ">",
    "%",
    "@",
    "`",
    "?",
    ".",
    "~",
    "ü",
    "\u2028",
    "\n",
    "\t",
    "\x00",
    "e",
    "x",
    "_",
    "/",
  ];
  const words = [
    "null",
    "true",
    "No",
    "~",
    "1",
    "0x1F",
    "1e3",
    ".inf",
    "-",
    "- a",
    "a: b",
    "a #b",
    "a:",
    "",
  ];
  for (let i = 0; i < 3000; i++) {
    const value = r.next() < 0.3
      ? r.pick(words)
      : Array.from({ length: r.int(12) }, () => r.pick(pool)).join("");
    assert.deepEqual(YAML.parse(`k: ${yamlString(value)}\n`), { k: value }, JSON.stringify(value));
  }
});

Deno.test("table fast path draws exactly what cli-table3 draws", () => {
  const r = rng(5);
  const columns = [{ header: "Job" }, { header: "Next run (UTC)" }, {
    header: "Size",
    align: "right" as const,
  }, { header: "Tags" }];
  for (const n of [1, 2, 99, 100, 101, 250]) {
    const rows = Array.from({ length: n }, (_, i) => [
      `job${"x".repeat(r.int(30))}${i}`,
      "2015-09-01 05:32:51",
      `${r.int(100000)} Bytes`,
      ["daily", "daily,weekly", "", "a b  c", "|-+"][r.int(5)],
    ]);
    assert.equal(asciiTable(columns, rows), renderWithCliTable(columns, rows), `${n} rows`);
  }
  assert.equal(asciiTable(columns, [["jöb", "x", "1", "y"]]), undefined);
  assert.equal(asciiTable(columns, []), undefined);
});
