/** Progress: rate window, ETA, the line and the `.progress` record, with exact values. */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  etaSeconds,
  formatClock,
  formatProgressLine,
  percent,
  progressRecord,
  RateWindow,
} from "../../src/util/progress_format.ts";

const MiB = 1024 * 1024;

Deno.test("RateWindow: bytes per second over the last window of samples", () => {
  const w = new RateWindow(10);
  assertEquals(w.rate(), 0, "no samples");
  w.sample(100, 0);
  assertEquals(w.rate(), 0, "one sample spans no time");
  w.sample(101, 100 * MiB);
  assertEquals(w.rate(), 100 * MiB);
  w.sample(102, 300 * MiB);
  assertEquals(w.rate(), 150 * MiB, "(300 - 0) MiB over 2 s");
  // A stall: samples older than the window fall out, the rate follows the last 10 s.
  for (let t = 103; t <= 112; t++) w.sample(t, 300 * MiB);
  assertEquals(w.rate(), 0, "nothing moved in the last 10 s");
  w.sample(114, 320 * MiB);
  assertEquals(w.rate(), 20 * MiB / 10, "20 MiB over the 10 s from t=104");
  w.reset();
  assertEquals(w.rate(), 0);
});

Deno.test("etaSeconds, formatClock and percent", () => {
  assertEquals(etaSeconds(0, 1000, 0), null, "no rate yet");
  assertEquals(etaSeconds(0, 0, 100), null, "unknown total");
  assertEquals(etaSeconds(250, 1000, 100), 8, "7.5 s rounded up");
  assertEquals(etaSeconds(1200, 1000, 100), 0, "past the total");
  assertEquals(formatClock(0), "0:00:00");
  assertEquals(formatClock(7), "0:00:07");
  assertEquals(formatClock(6157), "1:42:37");
  assertEquals(formatClock(123 * 3600), "123:00:00");
  assertEquals(percent(0, 0), "0.0");
  assertEquals(percent(1, 3), "33.3");
  assertEquals(percent(999, 1000), "99.9", "never rounded up to 100 before the end");
  assertEquals(percent(5, 4), "100.0");
});

Deno.test("formatProgressLine: phase, percent, bytes, rate, ETA; cut to the width", () => {
  const p = {
    command: "backup",
    phase: "copying",
    done: 10.4 * 1024 * MiB,
    total: 20 * 1024 * MiB,
    rate: 203.41 * MiB,
    eta: 51,
  };
  const line = "backup copying  52.0% 10.40 GiB of 20.00 GiB, 203.41 MiB/s, ETA 0:00:51";
  assertEquals(formatProgressLine(p), line);
  assertEquals(formatProgressLine(p, 30), line.slice(0, 30));
  assertEquals(
    formatProgressLine({ ...p, phase: "verifying", done: 0, rate: 0, eta: null }),
    "backup verifying   0.0% 0 Bytes of 20.00 GiB, 0 Bytes/s, ETA -",
  );
});

Deno.test("progressRecord: the fields the scheduler reads", () => {
  const state = { command: "restore", phase: "copying", done: 5, total: 10, rate: 2.6, eta: 2 };
  assertEquals(progressRecord(state, 4242, 1700000000.9), {
    pid: 4242,
    command: "restore",
    phase: "copying",
    done: 5,
    total: 10,
    rate: 3,
    eta: 2,
    updated: 1700000000,
  });
});
