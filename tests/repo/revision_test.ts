import { createHash } from "node:crypto";
/** `.rev` metadata (spec 2.3): parse and serialize, exact values. */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  formatRevTimestamp,
  isComplete,
  parseRevision,
  parseTimestamp,
  type Revision,
  serializeRevision,
} from "../../src/repo/revision.ts";
import { BackyError } from "../../src/util/errors.ts";

const us = (iso: string) => Date.parse(iso) * 1000;

Deno.test("2.1 sample1.rev: legacy type key, naive timestamp, null parent, no stats", () => {
  for (
    const text of [
      "uuid: asdf\ntype: full\ntimestamp: 2015-08-01T20:00:00\nparent:\n",
      "{uuid: asdf, type: full, timestamp: 2015-08-01T20:00:00, parent: null}\n",
      '{"uuid": "asdf", "type": "full", "timestamp": "2015-08-01T20:00:00", "parent": null}',
    ]
  ) {
    const r = parseRevision(text, "/job/asdf.rev", "asdf");
    assertEquals(r, {
      id: "asdf",
      timestampUs: us("2015-08-01T20:00:00Z"),
      parent: null,
      stats: { bytes_written: 0 },
      tags: [],
      backend: "cow",
      trust: "trusted",
      error: undefined,
      extra: { type: "full" },
    });
    assertEquals(isComplete(r), false, "no duration: incomplete");
  }
  // The spec writes the sample's parent as `<null>`; read literally it is just an
  // unknown parent ID (informational), not an error.
  const lit = parseRevision(
    "{uuid: asdf, type: full, timestamp: 2015-08-01T20:00:00, parent: <null>}",
    "/job/asdf.rev",
    "asdf",
  );
  assertEquals([lit.id, lit.timestampUs], ["asdf", us("2015-08-01T20:00:00Z")]);
});

Deno.test("2.1 sample2.rev and a 2.1 writer's flow style", () => {
  const s2 = parseRevision(
    "{uuid: asdf2, timestamp: 2015-08-01T21:00:00, parent: asdf}",
    "/j/asdf2.rev",
    "asdf2",
  );
  assertEquals([s2.parent, s2.timestampUs], ["asdf", us("2015-08-01T21:00:00Z")]);

  const text = "parent: asdf2\nstats: {bytes_written: 14868480, duration: 31.1}\n" +
    "tags: [weekly, daily]\ntimestamp: 2015-09-01 07:06:47.123456+00:00\nuuid: X1\n";
  const r = parseRevision(text, "/j/X1.rev", "X1");
  assertEquals(r.timestampUs, 1441091207123456);
  assertEquals(r.stats, { bytes_written: 14868480, duration: 31.1 });
  assertEquals(r.tags, ["daily", "weekly"], "tags sorted, deterministic");
  assertEquals(isComplete(r), true);
});

Deno.test("timestamps: microseconds, offsets, Z, naive, float epochs", () => {
  const cases: [unknown, number][] = [
    ["2015-09-01 07:06:47.123456+00:00", 1441091207123456],
    ["2015-09-01T07:06:47.123456Z", 1441091207123456],
    ["2015-09-01 07:06:47", 1441091207000000], // naive = UTC
    ["2015-09-01 09:06:47.5+02:00", 1441091207500000],
    ["2015-09-01 01:36:47-0530", 1441091207000000],
    ["2015-09-01 08:06:47 +01", 1441091207000000],
    ["2015-09-01T07:06:47.123456789Z", 1441091207123456], // nanoseconds truncated
    [1441091207.123456, 1441091207123456], // very old format: float Unix epoch
    [1441091207, 1441091207000000],
    [new Date("2015-09-01T07:06:47.123Z"), 1441091207123000],
  ];
  for (const [input, want] of cases) assertEquals(parseTimestamp(input), want, String(input));
  for (const bad of ["yesterday", "2015-13-45 99:00:00x", "", null, undefined, true]) {
    assertThrows(() => parseTimestamp(bad), Error, String(bad));
  }
});

Deno.test("formatRevTimestamp writes UTC with microseconds and +00:00", () => {
  assertEquals(formatRevTimestamp(1441091207123456), "2015-09-01 07:06:47.123456+00:00");
  assertEquals(formatRevTimestamp(1441091207000001), "2015-09-01 07:06:47.000001+00:00");
  assertEquals(formatRevTimestamp(0), "1970-01-01 00:00:00.000000+00:00");
});

Deno.test("serialize: sorted keys, exact text, round trip keeps unknown keys", () => {
  const rev: Revision = {
    id: "VqB7sDmAhjLx5eyAZqEhVs",
    timestampUs: 1441091207123456,
    parent: "Z9cRqJ3wNXkH7pLmTa2sYd",
    stats: { bytes_written: 8388608, duration: 1.2 },
    tags: ["weekly", "daily"],
    backend: "chunked",
    trust: "trusted",
    extra: { server: "backup01" },
  };
  const text = serializeRevision(rev);
  // The first line is the checksum of the rest (issue 9: metadata that can't lie).
  const [first, ...rest] = text.split("\n");
  assertEquals(
    first,
    `checksum: sha256:${createHash("sha256").update(rest.join("\n")).digest("hex")}`,
  );
  assertEquals(
    rest.join("\n"),
    [
      "backend: chunked",
      "parent: Z9cRqJ3wNXkH7pLmTa2sYd",
      "server: backup01",
      "stats:",
      "  bytes_written: 8388608",
      "  duration: 1.2",
      "tags:",
      "  - daily",
      "  - weekly",
      "timestamp: 2015-09-01 07:06:47.123456+00:00",
      "trust: trusted",
      "uuid: VqB7sDmAhjLx5eyAZqEhVs",
      "",
    ].join("\n"),
  );
  const back = parseRevision(text, "/j/x.rev", rev.id);
  assertEquals(back, {
    ...rev,
    tags: ["daily", "weekly"],
    error: undefined,
    checksummed: true,
    indexed: true,
  });

  const failed = { ...rev, parent: null, trust: "distrusted" as const, error: "bad: 1 block" };
  const failedText = serializeRevision(failed);
  assertEquals(failedText.split("\n").filter((l) => /^(error|parent|trust):/.test(l)), [
    'error: "bad: 1 block"',
    "parent: null",
    "trust: distrusted",
  ]);
  assertEquals(parseRevision(failedText, "/j/x.rev", rev.id).error, "bad: 1 block");
  assertEquals(parseRevision(failedText, "/j/x.rev", rev.id).trust, "distrusted");
});

Deno.test("backend and trust of other versions", () => {
  const parse = (extra: string) =>
    parseRevision(`uuid: a\ntimestamp: 2016-01-01 00:00:00\n${extra}`, "/j/a.rev", "a");
  assertEquals(parse("").backend, "cow");
  assertEquals(parse("backend_type: cowfile\n").backend, "cow");
  assertEquals(parse("backend_type: chunked\n").backend, "chunked");
  assertEquals(parse("backend: chunked\n").backend, "chunked");
  assertEquals(parse("trust: verified\n").trust, "verified");
  assertEquals(parse("parent: ''\n").parent, null, "HEAD writes '' for no parent");
  assertEquals(parse("stats: {bytes_written: 5, duration: null}\n").stats, { bytes_written: 5 });
});

Deno.test("corrupt .rev files are BackyErrors naming the file", () => {
  const cases: [string, string][] = [
    ["uuid: [unclosed\n", "corrupt revision file /j/a.rev: "],
    ["", "corrupt revision file /j/a.rev: not a YAML mapping"],
    ["- a\n- b\n", "corrupt revision file /j/a.rev: not a YAML mapping"],
    ["uuid: a\n", "corrupt revision file /j/a.rev: timestamp missing or not a timestamp"],
    [
      "uuid: a\ntimestamp: soon\n",
      "corrupt revision file /j/a.rev: invalid timestamp 'soon'",
    ],
    [
      "uuid: b\ntimestamp: 2016-01-01 00:00:00\n",
      "corrupt revision file /j/a.rev: uuid 'b' does not match the file name",
    ],
    [
      "uuid: ../x\ntimestamp: 2016-01-01 00:00:00\n",
      "corrupt revision file /j/a.rev: invalid uuid '../x'",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\nstats: [1]\n",
      "corrupt revision file /j/a.rev: stats is not a mapping",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\nstats: {bytes_written: lots}\n",
      "corrupt revision file /j/a.rev: stats.bytes_written is not a number",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\nstats: {bytes_written: 1, duration: long}\n",
      "corrupt revision file /j/a.rev: stats.duration is not a number",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\ntags: daily\n",
      "corrupt revision file /j/a.rev: tags is not a list",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\nbackend: tape\n",
      "corrupt revision file /j/a.rev: unknown backend 'tape'",
    ],
    [
      "uuid: a\ntimestamp: 2016-01-01 00:00:00\ntrust: maybe\n",
      "corrupt revision file /j/a.rev: unknown trust 'maybe'",
    ],
  ];
  for (const [text, message] of cases) {
    assertThrows(() => parseRevision(text, "/j/a.rev", "a"), (e: unknown) => {
      assertEquals(e instanceof BackyError, true, text);
      assertEquals(
        (e as Error).message.startsWith(message) &&
          (message.endsWith(": ") || (e as Error).message === message),
        true,
        `${JSON.stringify(text)}: got ${(e as Error).message}`,
      );
      return true;
    });
  }
  // A truncated file (cut in the middle) is caught the same way.
  const full = serializeRevision({
    id: "a",
    timestampUs: 1441091207123456,
    parent: null,
    stats: { bytes_written: 1, duration: 2 },
    tags: ["daily"],
    backend: "cow",
    trust: "trusted",
    extra: {},
  });
  assertThrows(
    () => parseRevision(full.slice(0, full.length / 2), "/j/a.rev", "a"),
    /corrupt revision file \/j\/a\.rev: checksum mismatch/,
  );
});

Deno.test("a flipped bit anywhere in a .rev of this version is caught; 2.x files load as before", async () => {
  const { quickRevision } = await import("../../src/scheduler/quickrev.ts");
  const rev: Revision = {
    id: "VqB7sDmAhjLx5eyAZqEhVs",
    timestampUs: 1441091207123456,
    parent: null,
    stats: { bytes_written: 8388608, duration: 1.2 },
    tags: ["daily"],
    backend: "cow",
    trust: "verified",
    verifiedAtUs: 1441091300000000,
    extra: {},
  };
  const text = new TextEncoder().encode(serializeRevision(rev));
  assertEquals(
    parseRevision(new TextDecoder().decode(text), "/j/x.rev", rev.id).verifiedAtUs,
    1441091300000000,
  );
  // Every bit of every byte (duration, year, tags, trust, the checksum itself).
  let caught = 0;
  for (let i = 0; i < text.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = text.slice();
      bad[i] ^= 1 << bit;
      const t = new TextDecoder().decode(bad);
      assertThrows(() => parseRevision(t, "/j/x.rev", rev.id), BackyError, `byte ${i} bit ${bit}`);
      assertEquals(quickRevision(t, rev.id), undefined, `quick: byte ${i} bit ${bit}`);
      caught++;
    }
  }
  assertEquals(caught, text.length * 8);
  // A checksum line anywhere but first, or a second one, is damage too.
  const good = new TextDecoder().decode(text);
  const [first, ...rest] = good.split("\n");
  assertThrows(() => parseRevision(rest.join("\n") + first + "\n", "/j/x.rev", rev.id), /checksum/);
  assertThrows(() => parseRevision(first + "\n" + good, "/j/x.rev", rev.id), /checksum/);
  // backy 2.1 and 3.0 wrote no checksum: read as they are, not marked as checksummed.
  const legacy = parseRevision(rest.join("\n"), "/j/x.rev", rev.id);
  assertEquals(legacy.checksummed, undefined);
  assertEquals(legacy.stats.duration, 1.2);
});
