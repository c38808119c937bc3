// node:assert keeps the lock file untouched (no jsr:@std dependency in this project).
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  backoffSeconds,
  EPOCH_0001,
  expire,
  longestInterval,
  nextIdeal,
  nextInInterval,
  nextRun,
  type RevisionInfo,
  type Schedule,
  slaOk,
  smallestInterval,
  sortedTags,
  spread,
} from "../../src/scheduler/schedule.ts";
import { MT19937 } from "../../src/scheduler/mt19937.ts";

const HOUR = 3600;
const DAY = 86400;
const WEEK = 604800;
const MONTH = 2592000;

/** Unix seconds of an ISO time (UTC). */
const T = (iso: string): number => Date.parse(iso) / 1000;

const DAILY: Schedule = { daily: { interval: DAY, keep: 9 } };
const DWM: Schedule = {
  monthly: { interval: MONTH, keep: 3 },
  daily: { interval: DAY, keep: 9 },
  weekly: { interval: WEEK, keep: 5 },
};

Deno.test("EPOCH_0001 is 0001-01-01T00:00:00Z", () => {
  assertEquals(new Date(EPOCH_0001 * 1000).toISOString(), "0001-01-01T00:00:00.000Z");
});

Deno.test("spread matches backy/Python for the verified job names", () => {
  assertEquals(spread("test01", DAY), 19971);
  assertEquals(spread("test02", DAY), 36217);
  assertEquals(spread("asdf02", DAY), 14532);
  assertEquals(spread("foo00", DAY), 72995);
  assertEquals(spread("test01", WEEK), 159773);
  assertEquals(spread("test01", MONTH), 639092);
  assertEquals(spread("test01", HOUR), 624);
});

Deno.test("spread: UTF-8 names, empty name, tiny and >32-bit limits (values from CPython)", () => {
  assertEquals(spread("", DAY), 18994);
  assertEquals(spread("ümlaut-vm", DAY), 67273);
  assertEquals(spread("test01", 0), 0);
  assertEquals(spread("test01", 1), 0);
  assertEquals(spread("test01", 2 ** 40), 719271914955);
});

Deno.test("MT19937 seeding uses the minimal number of 32-bit key words like CPython", () => {
  const cases: [bigint, number, bigint][] = [
    [0n, 50494, 3255389356n],
    [1n, 17611, 2444712010n],
    [2n ** 32n, 14810, 1508871100n], // key [0, 1], not [0, 1, 0, 0]
    [2n ** 64n + 5n, 66922, 3085273184n],
  ];
  for (const [seed, first, bits] of cases) {
    const rng = MT19937.fromPythonIntSeed(seed);
    assertEquals(rng.randint(0, DAY), first, `seed ${seed}`);
    assertEquals(rng.getrandbits(32), bits, `seed ${seed}`);
  }
  // Python's seed() uses |n|.
  assertEquals(MT19937.fromPythonIntSeed(-1n).randint(0, DAY), 17611);
});

Deno.test("longest and smallest interval", () => {
  assertEquals(longestInterval(DWM), MONTH);
  assertEquals(smallestInterval(DWM), DAY);
  assertEquals(longestInterval({}), 0);
  assertEquals(smallestInterval({}), 0);
});

Deno.test("nextInInterval: spec 4.4 examples (daily, spread 100)", () => {
  const expected = T("2015-09-02T00:01:40Z");
  for (
    const now of [
      "2015-09-01T07:06:47Z",
      "2015-09-01T07:36:47Z",
      "2015-09-01T08:06:47Z",
      "2015-09-02T00:01:20Z",
      "2015-09-02T00:01:39Z",
    ]
  ) {
    assertEquals(nextInInterval(T(now), DAY, 100), expected, now);
  }
  // At exactly the slot the next one is returned: strictly after now.
  assertEquals(nextInInterval(T("2015-09-02T00:01:40Z"), DAY, 100), T("2015-09-03T00:01:40Z"));
  assertEquals(nextInInterval(T("2015-09-02T00:01:41Z"), DAY, 100), T("2015-09-03T00:01:40Z"));
});

Deno.test("nextInInterval: weekly is anchored on Monday, 30 days on 0001-01-01", () => {
  const now = T("2015-09-01T07:06:47Z"); // a Tuesday
  assertEquals(nextInInterval(now, WEEK, 100), T("2015-09-07T00:01:40Z"));
  assertEquals(nextInInterval(now, MONTH, 100), T("2015-09-30T00:01:40Z"));
  assertEquals(nextInInterval(now, HOUR, 624), T("2015-09-01T07:10:24Z"));
  // spread larger than the interval wraps: 159773 mod 86400 = 73373 s = 20:22:53.
  assertEquals(nextInInterval(now, DAY, 159773), T("2015-09-01T20:22:53Z"));
  assertEquals(nextInInterval(now, WEEK, 159773), T("2015-09-01T20:22:53Z"));
  // Before the Unix epoch and fractional times work too; 1970-01-05 is a Monday.
  assertEquals(nextInInterval(-1, DAY, 0), 0);
  assertEquals(nextInInterval(0, WEEK, 0), T("1970-01-05T00:00:00Z"));
  assertEquals(
    nextInInterval(T("2015-09-02T00:01:39Z") + 0.5, DAY, 100),
    T("2015-09-02T00:01:40Z"),
  );
  assertEquals(
    nextInInterval(T("2015-09-02T00:01:40Z") + 0.5, DAY, 100),
    T("2015-09-03T00:01:40Z"),
  );
  assertThrows(() => nextInInterval(0, 0, 0), RangeError);
});

Deno.test("nextIdeal: earliest slot and the tags coinciding with it", () => {
  assertEquals(nextIdeal(T("2015-09-01T07:06:47Z"), DAILY, 100), {
    time: T("2015-09-02T00:01:40Z"),
    tags: ["daily"],
  });
  assertEquals(nextIdeal(T("2015-09-01T07:06:47Z"), DWM, 100), {
    time: T("2015-09-02T00:01:40Z"),
    tags: ["daily"],
  });
  // Monday slot carries weekly; 2015-08-31 is also a 30-day slot.
  assertEquals(nextIdeal(T("2015-08-30T12:00:00Z"), DWM, 100), {
    time: T("2015-08-31T00:01:40Z"),
    tags: ["daily", "weekly", "monthly"],
  });
  assertEquals(nextIdeal(T("2015-09-06T12:00:00Z"), DWM, 100), {
    time: T("2015-09-07T00:01:40Z"),
    tags: ["daily", "weekly"],
  });
  assertEquals(nextIdeal(T("2015-09-01T07:06:47Z"), DWM, 159773), {
    time: T("2015-09-01T20:22:53Z"),
    tags: ["daily", "weekly", "monthly"],
  });
  assertThrows(() => nextIdeal(0, {}, 0), RangeError);
});

Deno.test("nextRun: nothing missed waits for the ideal slot", () => {
  const schedule: Schedule = { daily: DWM.daily, weekly: DWM.weekly };
  const now = T("2015-09-01T07:06:47Z");
  const last = new Map([
    ["daily", T("2015-09-01T00:01:45Z")],
    ["weekly", T("2015-08-31T00:01:45Z")],
    ["unrelated", T("2000-01-01T00:00:00Z")],
  ]);
  assertEquals(nextRun(now, schedule, 100, last, false), {
    time: T("2015-09-02T00:01:40Z"),
    tags: ["daily"],
  });
});

Deno.test("nextRun: missed tags run now, alone", () => {
  const schedule: Schedule = { daily: DWM.daily, weekly: DWM.weekly };
  const now = T("2015-09-01T07:06:47Z");
  assertEquals(
    nextRun(
      now,
      schedule,
      100,
      new Map([["daily", T("2015-08-31T00:01:45Z")], ["weekly", T("2015-08-31T00:01:45Z")]]),
      false,
    ),
    { time: now, tags: ["daily"] },
  );
  assertEquals(
    nextRun(
      now,
      schedule,
      100,
      new Map([["daily", T("2015-09-01T00:01:45Z")], ["weekly", T("2015-08-24T00:01:45Z")]]),
      false,
    ),
    { time: now, tags: ["weekly"] },
  );
  // Never seen counts as missed.
  assertEquals(
    nextRun(now, schedule, 100, new Map([["daily", T("2015-09-01T00:01:45Z")]]), false),
    { time: now, tags: ["weekly"] },
  );
});

Deno.test("nextRun: exactly one interval old is missed, one second less is not", () => {
  const now = T("2015-09-01T07:06:47Z");
  assertEquals(nextRun(now, DAILY, 100, new Map([["daily", now - DAY]]), false), {
    time: now,
    tags: ["daily"],
  });
  assertEquals(nextRun(now, DAILY, 100, new Map([["daily", now - DAY + 1]]), false), {
    time: T("2015-09-02T00:01:40Z"),
    tags: ["daily"],
  });
});

Deno.test("nextRun: a slot at most 300 s away absorbs the missed tags", () => {
  const schedule: Schedule = { daily: DWM.daily, weekly: DWM.weekly };
  const last = new Map([
    ["daily", T("2015-09-01T00:01:45Z")],
    ["weekly", T("2015-08-20T00:00:00Z")],
  ]);
  const slot = T("2015-09-02T00:01:40Z");
  assertEquals(nextRun(slot - 300, schedule, 100, last, false), {
    time: slot,
    tags: ["daily", "weekly"],
  });
  assertEquals(nextRun(slot - 301, schedule, 100, last, false), {
    time: slot - 301,
    tags: ["weekly"],
  });
});

Deno.test("nextRun: empty history runs now with all tags unless the slot is near", () => {
  const now = T("2015-09-01T07:06:47Z");
  assertEquals(nextRun(now, DWM, 100, new Map(), true), {
    time: now,
    tags: ["daily", "weekly", "monthly"],
  });
  // Stale lastByTag is ignored when the history is empty.
  assertEquals(nextRun(now, DWM, 100, new Map([["daily", now - 10]]), true), {
    time: now,
    tags: ["daily", "weekly", "monthly"],
  });
  const slot = T("2015-09-02T00:01:40Z");
  assertEquals(nextRun(slot - 120, DWM, 100, new Map(), true), {
    time: slot,
    tags: ["daily", "weekly", "monthly"],
  });
});

Deno.test("backoffSeconds doubles from 120 s and caps at 6 h", () => {
  assertEquals(
    [0, 1, 2, 3, 4, 8, 9, 10, 100, 5000, -1].map(backoffSeconds),
    [0, 120, 240, 480, 960, 15360, 21600, 21600, 21600, 21600, 0],
  );
});

Deno.test("sortedTags: by interval, unknown first, ties by name, distinct", () => {
  assertEquals(sortedTags(["monthly", "weekly", "daily"], DWM), ["daily", "weekly", "monthly"]);
  assertEquals(
    sortedTags(["weekly", "manual:x", "daily", "abc", "toString", "daily"], DWM),
    ["abc", "manual:x", "toString", "daily", "weekly"],
  );
  const tie: Schedule = { b: { interval: HOUR, keep: 1 }, a: { interval: HOUR, keep: 1 } };
  assertEquals(sortedTags(new Set(["b", "a"]), tie), ["a", "b"]);
});

/** Revisions r0 (newest) .. r<n-1>, `step` seconds apart, the newest at `newest`. */
function series(
  n: number,
  newest: number,
  step: number,
  tags: (i: number) => string[],
): RevisionInfo[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `r${i}`,
    timestamp: newest - i * step,
    tags: tags(i),
  }));
}

const ids = (from: number, to: number, skip: number[] = []): string[] =>
  Array.from({ length: to - from + 1 }, (_, k) => from + k)
    .filter((i) => !skip.includes(i))
    .map((i) => `r${i}`);

const NOW = T("2015-09-10T12:00:00Z");

Deno.test("expire: daily keep 3, ten revisions a day apart", () => {
  const s: Schedule = { daily: { interval: DAY, keep: 3 } };
  const revs = series(10, NOW - 60, DAY, () => ["daily"]);
  assertEquals(expire(revs, s, NOW), { retag: new Map(), remove: ids(3, 9) });
});

Deno.test("expire: a revision exactly at now - keep*interval survives, one second older not", () => {
  const s: Schedule = { daily: { interval: DAY, keep: 3 } };
  assertEquals(expire(series(10, NOW, DAY, () => ["daily"]), s, NOW), {
    retag: new Map(),
    remove: ids(4, 9),
  });
  assertEquals(expire(series(10, NOW - 1, DAY, () => ["daily"]), s, NOW), {
    retag: new Map(),
    remove: ids(3, 9),
  });
});

Deno.test("expire: revisions younger than the threshold are kept beyond keep", () => {
  const s: Schedule = { daily: { interval: DAY, keep: 3 } };
  // Every 6 h for 5 days: threshold now-3d keeps r0..r12.
  const revs = series(20, NOW, 6 * HOUR, () => ["daily"]);
  assertEquals(expire(revs, s, NOW), { retag: new Map(), remove: ids(13, 19) });
  // keep larger than the number of revisions keeps everything.
  const many: Schedule = { daily: { interval: DAY, keep: 30 } };
  assertEquals(expire(series(5, NOW - 100 * DAY, DAY, () => ["daily"]), many, NOW), {
    retag: new Map(),
    remove: [],
  });
});

Deno.test("expire: weekly + daily mix keeps weekly revisions longer", () => {
  const s: Schedule = {
    daily: { interval: DAY, keep: 3 },
    weekly: { interval: WEEK, keep: 2 },
  };
  const revs = series(21, NOW - HOUR, DAY, (i) => i % 7 === 0 ? ["daily", "weekly"] : ["daily"]);
  assertEquals(expire(revs, s, NOW), {
    retag: new Map([["r7", ["weekly"]]]),
    remove: ids(3, 20, [7]),
  });
});

Deno.test("expire: manual tags stay, unknown tags go, input order is irrelevant", () => {
  const s: Schedule = { daily: { interval: DAY, keep: 1 } };
  const revs: RevisionInfo[] = [
    { id: "old-manual", timestamp: NOW - 50 * DAY, tags: ["manual:keep"] },
    { id: "old-mixed", timestamp: NOW - 40 * DAY, tags: ["daily", "manual:x"] },
    { id: "old-unknown", timestamp: NOW - 30 * DAY, tags: ["hourly"] },
    { id: "old-daily", timestamp: NOW - 20 * DAY, tags: ["daily", "daily"] },
    { id: "newest", timestamp: NOW - HOUR, tags: ["hourly", "daily"] },
    { id: "dup", timestamp: NOW - 2 * HOUR, tags: ["manual:a", "manual:a"] },
  ];
  const expected = {
    retag: new Map([["newest", ["daily"]], ["old-mixed", ["manual:x"]]]),
    remove: ["old-daily", "old-unknown"],
  };
  assertEquals(expire(revs, s, NOW), expected);
  assertEquals(expire([...revs].reverse(), s, NOW), expected);
});

Deno.test("expire: the newest revision survives a tag rename, even without tags", () => {
  const s: Schedule = { daily: { interval: DAY, keep: 3 } };
  const revs = series(5, NOW - HOUR, DAY, () => ["nightly"]);
  assertEquals(expire(revs, s, NOW), {
    retag: new Map(ids(0, 0).map((id) => [id, []])),
    remove: ids(1, 4),
  });
  // Same timestamp: the tie goes to the greater id, deterministically.
  const twins: RevisionInfo[] = [
    { id: "a", timestamp: NOW, tags: ["gone"] },
    { id: "b", timestamp: NOW, tags: ["gone"] },
  ];
  assertEquals(expire(twins, s, NOW), { retag: new Map([["b", []]]), remove: ["a"] });
  assertEquals(expire([], s, NOW), { retag: new Map(), remove: [] });
});

Deno.test("slaOk: daily example and the 1.5 x smallest interval boundary", () => {
  const now = T("2015-09-01T07:06:47Z");
  for (const age of [6 * HOUR, 24 * HOUR, 32 * HOUR, 36 * HOUR]) {
    assertEquals(slaOk(now, now - age, DAILY), true, `age ${age}`);
  }
  assertEquals(slaOk(now, now - 36 * HOUR - 1, DAILY), false);
  assertEquals(slaOk(now, undefined, DAILY), true);
  const withHourly: Schedule = { ...DWM, hourly: { interval: HOUR, keep: 24 } };
  assertEquals(slaOk(now, now - 90 * 60, withHourly), true);
  assertEquals(slaOk(now, now - 90 * 60 - 1, withHourly), false);
  assertEquals(slaOk(now, now - 1000 * DAY, {}), true);
});
