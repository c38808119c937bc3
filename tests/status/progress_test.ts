import assert from "node:assert/strict";
import { join } from "node:path";
import {
  formatEta,
  formatProgress,
  parseProgress,
  readProgress,
} from "../../src/status/progress.ts";
import { tempDir } from "../helpers.ts";

const GOOD = {
  pid: 1,
  command: "backup",
  phase: "verifying",
  done: 3 * 1024 ** 3,
  total: 4 * 1024 ** 3,
  rate: 200 * 1024 ** 2,
  eta: 3725,
  updated: 1714564800,
};

Deno.test("parseProgress: the documented record; anything else is no progress", () => {
  assert.deepEqual(parseProgress(JSON.stringify({ ...GOOD, extra: 1 })), GOOD);
  assert.deepEqual(parseProgress(JSON.stringify({ ...GOOD, eta: null }))?.eta, null);
  for (
    const bad of [
      "",
      "{",
      "[]",
      JSON.stringify({ ...GOOD, pid: 0 }),
      JSON.stringify({ ...GOOD, done: "1" }),
      JSON.stringify({ ...GOOD, eta: "soon" }),
      JSON.stringify({ ...GOOD, phase: undefined }),
    ]
  ) assert.equal(parseProgress(bad), undefined, bad);
  // Control characters never reach a table or log line.
  assert.equal(
    parseProgress(JSON.stringify({ ...GOOD, phase: "co\u001b[2Jpying" }))?.phase,
    "co2Jpying",
  );
});

Deno.test("formatProgress and formatEta", () => {
  assert.equal(
    formatProgress(GOOD),
    "verifying 75% (3.00 GiB of 4.00 GiB, 200.00 MiB/s, ETA 1:02:05)",
  );
  assert.equal(
    formatProgress({ ...GOOD, done: 1, total: 3, eta: null }),
    "verifying 33.3% (1 Byte of 3 Bytes, 200.00 MiB/s)",
  );
  assert.equal(formatEta(0), "0:00");
  assert.equal(formatEta(59.6), "1:00");
  assert.equal(formatEta(3600), "1:00:00");
});

Deno.test("readProgress: only while the writing process lives", async () => {
  const dir = await tempDir("backy-progress-");
  try {
    assert.equal(await readProgress(dir), undefined);
    await Deno.writeTextFile(join(dir, ".progress"), JSON.stringify({ ...GOOD, pid: Deno.pid }));
    assert.equal((await readProgress(dir))?.pid, Deno.pid);
    // A process that has exited (a crashed backup left the file behind).
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    await Deno.writeTextFile(join(dir, ".progress"), JSON.stringify({ ...GOOD, pid: gone.pid }));
    assert.equal(await readProgress(dir), undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
