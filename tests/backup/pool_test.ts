// The coordinator's helpers without a cluster: the ordered pipeline and verification's
// random sample (backup/pool.ts, backup/verify.ts).
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { pipeline } from "../../src/backup/pool.ts";
import { sampleIndices } from "../../src/backup/verify.ts";

const later = <T>(ms: number, v: T) => new Promise<T>((r) => setTimeout(() => r(v), ms));

Deno.test("pipeline: results in order whatever order they finish, at most `window` in flight", async () => {
  let inflight = 0;
  let peak = 0;
  const got: number[] = [];
  await pipeline(20, 4, async (i) => {
    inflight++;
    peak = Math.max(peak, inflight);
    const v = await later((20 - i) % 7, i * i); // finish out of order
    inflight--;
    return v;
  }, (i, r) => {
    assertEquals(r, i * i);
    got.push(i);
  });
  assertEquals(got, [...Array(20).keys()]);
  assertEquals(peak, 4);
});

Deno.test("pipeline: a failure stops new work and waits for the work in flight", async () => {
  const started: number[] = [];
  const finished: number[] = [];
  await rejects(
    () =>
      pipeline(100, 3, async (i) => {
        started.push(i);
        if (i === 2) throw new Error("block 2 failed");
        await later(30, 0);
        finished.push(i);
        return i;
      }, () => {}),
    /block 2 failed/,
  );
  // Nothing that started is still running when pipeline rejects.
  assertEquals(finished.sort((a, b) => a - b), started.filter((i) => i !== 2));
  assert(started.length < 10, `stopped early (started ${started.length})`);
});

Deno.test("sampleIndices: k distinct indices in range; all of them when k >= n", () => {
  for (const [n, k] of [[1000, 10], [7, 7], [3, 10], [1, 1]]) {
    const s = sampleIndices(n, k);
    assertEquals(s.length, Math.min(n, k));
    assertEquals(new Set(s).size, s.length);
    assert(s.every((i) => Number.isInteger(i) && i >= 0 && i < n));
  }
  assertEquals(sampleIndices(5, 5).sort(), [0, 1, 2, 3, 4]);
});

Deno.test("sampleIndices: every index is drawn about equally often", () => {
  const counts = new Array(10).fill(0);
  for (let r = 0; r < 5000; r++) for (const i of sampleIndices(10, 2)) counts[i]++;
  // 1000 expected per index; 6 sigma is about +-170.
  for (const c of counts) assert(c > 800 && c < 1200, String(counts));
});
