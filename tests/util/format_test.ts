/** Output formats of backy 2.1 (spec 1.5): exact values. */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import {
  formatBytes,
  formatDateTime,
  formatDuration,
  formatTimestamp,
} from "../../src/util/format.ts";

Deno.test("formatBytes: the values of spec 1.5", () => {
  const KiB = 1024;
  const cases: [number, string][] = [
    [0, "0 Bytes"],
    [1, "1 Byte"],
    [2, "2 Bytes"],
    [100, "100 Bytes"],
    [1023, "1023 Bytes"],
    [1024, "1.00 kiB"],
    [2500, "2.44 kiB"],
    [524280, "511.99 kiB"],
    [KiB ** 2 - 1, "1024.00 kiB"], // 1023.999 kiB rounds in the label only
    [KiB ** 2, "1.00 MiB"],
    [12 * KiB ** 2, "12.00 MiB"],
    [KiB ** 3, "1.00 GiB"],
    [1.5 * KiB ** 3, "1.50 GiB"],
    [KiB ** 4, "1.00 TiB"],
    [KiB ** 5, "1024.00 TiB"], // TiB is the last resort
    [3 * KiB ** 5, "3072.00 TiB"],
  ];
  for (const [n, want] of cases) assertEquals(formatBytes(n), want, String(n));
});

Deno.test("formatDuration: one decimal and ' s'; missing = '0 s'", () => {
  assertEquals(formatDuration(undefined), "0 s");
  assertEquals(formatDuration(0), "0.0 s");
  assertEquals(formatDuration(845), "845.0 s");
  assertEquals(formatDuration(31.1), "31.1 s");
  assertEquals(formatDuration(31.14), "31.1 s");
  assertEquals(formatDuration(31.15), "31.2 s");
  assertEquals(formatDuration(0.04), "0.0 s");
});

Deno.test("timestamps in UTC", () => {
  const d = new Date(Date.UTC(2015, 8, 1, 7, 6, 47, 999));
  assertEquals(formatDateTime(d), "2015-09-01 07:06:47");
  assertEquals(formatTimestamp(d), "2015-09-01 07:06:47 UTC");
});
