// Black-box fault tests against the real test cluster: a backup killed mid-stream, wrong pool
// or image names, a revision corrupted on its way into the store (caught by the sampled
// verification), a missing rbd binary.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { assertIncludes, fileExists, listDir, revisions, spawnBacky } from "../helpers.ts";
import {
  cephCluster,
  cephTest,
  createTestImage,
  pattern,
  reportIgnored,
  uniqueName,
  writeAt,
} from "./cluster.ts";
import {
  assertSameBytes,
  type Backend,
  backupOk,
  cephJob,
  exportBytes,
  MiB,
  OBJECT,
  rbdWrapper,
  restoreBytes,
  snapNames,
  stats,
} from "./jobs.ts";

const cluster = await cephCluster();
reportIgnored(cluster, "faults_test.ts");

async function waitFor(path: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await fileExists(path))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

cephTest(
  cluster,
  "backup killed mid-stream: the next one is incremental and correct",
  async (c) => {
    const size = 24 * MiB;
    const img = await createTestImage(c, size, [{ offset: 0, data: pattern(MiB, 41) }]);
    const job = await cephJob(c, img.spec, "chunked");
    const tmp = join(job.dir, "..");
    const mark = join(tmp, "sleeping.pid");
    try {
      const r1 = await backupOk(job);
      const e1 = await exportBytes(c, `${img.spec}@backy-${r1.id}`);
      // three changed objects: a 12 MiB diff, of which rbd hands over 3 MB, then stalls
      await writeAt(c, img.spec, [
        { offset: 4 * MiB, data: pattern(4096, 42) },
        { offset: 12 * MiB, data: pattern(4096, 43) },
        { offset: 20 * MiB, data: pattern(4096, 44) },
      ]);
      const slow = await rbdWrapper(
        tmp,
        "rbd-stalls",
        `if [ "$1" = export-diff ]; then
  "$REAL" "$@" | { head -c 3000000; sleep 60 & echo $! > "${mark}.tmp"; mv "${mark}.tmp" "${mark}"; wait; }
  exit "\${PIPESTATUS[0]}"
fi`,
      );
      const child = spawnBacky(["-b", job.dir, "backup", "daily"], {
        env: { ...job.env, BACKY_RBD: slow },
      });
      try {
        await waitFor(mark, 20_000);
        await new Promise((r) => setTimeout(r, 300)); // let backy take in what it got
      } finally {
        child.kill("SIGKILL");
        const out = await child.output();
        assertEquals(out.signal, "SIGKILL");
        // the wrapper's stall, started by this test: end it so rbd sees the closed pipe
        if (await fileExists(mark)) {
          try {
            Deno.kill(Number((await Deno.readTextFile(mark)).trim()), "SIGKILL");
          } catch {
            // already gone
          }
        }
      }
      const killed = (await revisions(job.dir)).find((r) => r.id !== r1.id);
      assert(killed, "the killed backup left its (incomplete) revision");
      assertEquals(killed.duration, undefined);
      // the previous snapshot is still there (and the killed run's own)
      assertEquals(await snapNames(c, img.spec), [`backy-${killed.id}`, `backy-${r1.id}`].sort());

      const r3 = await backupOk(job);
      assertEquals(stats(r3).mode, "diff");
      assertEquals(r3.parent, r1.id);
      assert(Number(stats(r3).bytes_received) <= 3 * OBJECT, String(stats(r3).bytes_received));
      assertEquals((await revisions(job.dir)).map((r) => r.id), [r1.id, r3.id]);
      assertEquals(await snapNames(c, img.spec), [`backy-${r3.id}`]);
      const e3 = await exportBytes(c, `${img.spec}@backy-${r3.id}`);
      assertSameBytes(await restoreBytes(job, r3.id), e3, "restore after the killed backup");
      assertSameBytes(await restoreBytes(job, r1.id), e1, "older restore unchanged");
    } finally {
      await job.cleanup();
      await img.remove();
    }
  },
);

cephTest(cluster, "wrong pool or image: exit 1, clear message, nothing created", async (c) => {
  const img = await createTestImage(c, 4 * MiB, [{ offset: 0, data: pattern(4096, 51) }]);
  const missing = uniqueName("missing");
  const cases = [
    { pool: c.pool, image: missing, spec: `${c.pool}/${missing}` },
    { pool: `nosuchpool${Deno.pid}`, image: img.name, spec: `nosuchpool${Deno.pid}/${img.name}` },
  ];
  try {
    for (const t of cases) {
      const job = await cephJob(c, t.spec, "chunked");
      try {
        const r = await job.run(["backup", "daily"]);
        assertEquals(r.code, 1, r.stdout + r.stderr);
        assertIncludes(r.stderr, "Error: Source is not ready");
        assertIncludes(r.stderr, t.spec);
        assert(!r.stderr.includes("    at "), "no stack trace");
        // nothing but the config (and hidden lock files)
        assertEquals((await listDir(job.dir)).filter((n) => !n.startsWith(".")), ["config"]);
        assertEquals(await revisions(job.dir), []);
      } finally {
        await job.cleanup();
      }
    }
    // the image of the same name in the right pool was not touched either
    assertEquals(await snapNames(c, img.spec), []);
    const exists = await new Deno.Command("rbd", {
      args: ["info", `${c.pool}/${missing}`],
      env: c.env,
      stdout: "null",
      stderr: "null",
    }).output();
    assertEquals(exists.code, 2, "no image was created");
  } finally {
    await img.remove();
  }
});

/**
 * A filter for `rbd diff v1` streams that keeps the framing but flips one byte in every
 * 4 KiB of every `w` record's data (and its first byte): every block it touches is corrupt.
 */
const CORRUPTER = `
const out = Deno.stdout;
const reader = Deno.stdin.readable.getReader();
let buf = new Uint8Array(0);
async function need(n) {
  while (buf.length < n) {
    const r = await reader.read();
    if (r.done) throw new Error("truncated diff");
    const b = new Uint8Array(buf.length + r.value.length);
    b.set(buf); b.set(r.value, buf.length); buf = b;
  }
}
async function take(n) { await need(n); const t = buf.slice(0, n); buf = buf.subarray(n); return t; }
async function put(b) { let o = 0; while (o < b.length) o += await out.write(b.subarray(o)); }
const u64 = (b, at) => Number(new DataView(b.buffer, b.byteOffset).getBigUint64(at, true));
await put(await take(12));
for (;;) {
  const tag = await take(1);
  await put(tag);
  const t = String.fromCharCode(tag[0]);
  if (t === "e") break;
  if (t === "f" || t === "t") { const l = await take(4); await put(l); await put(await take(new DataView(l.buffer).getUint32(0, true))); }
  else if (t === "s") await put(await take(8));
  else if (t === "z") await put(await take(16));
  else if (t === "w") {
    const h = await take(16); await put(h);
    const off = u64(h, 0); let len = u64(h, 8); let pos = 0;
    while (len > 0) {
      const n = Math.min(len, 1 << 20);
      const d = await take(n);
      for (let i = 0; i < n; i++) if ((off + pos + i) % 4096 === 0 || pos + i === 0) d[i] ^= 0x5a;
      await put(d); len -= n; pos += n;
    }
  } else throw new Error("unknown record " + t);
}
const rest = await reader.read();
if (!rest.done) await put(rest.value);
`;

for (const backend of ["cow", "chunked"] as Backend[]) {
  cephTest(
    cluster,
    `${backend}: verification catches a revision corrupted on its way into the store`,
    async (c) => {
      const size = 4 * OBJECT;
      const img = await createTestImage(c, size, [
        { offset: 0, data: pattern(16 * MiB, 61) }, // every object holds data
      ]);
      const job = await cephJob(c, img.spec, backend);
      const tmp = join(job.dir, "..");
      try {
        const r1 = await backupOk(job);
        const e1 = await exportBytes(c, `${img.spec}@backy-${r1.id}`);
        // change every object, so whichever block is sampled was corrupted
        await writeAt(
          c,
          img.spec,
          [0, 1, 2, 3].map((i) => ({ offset: i * OBJECT + 8192, data: pattern(4096, 62 + i) })),
        );
        const filter = join(tmp, "corrupt.js");
        await Deno.writeTextFile(filter, CORRUPTER);
        const bad = await rbdWrapper(
          tmp,
          "rbd-corrupts",
          `if [ "$1" = export-diff ]; then
  set -o pipefail
  "$REAL" "$@" | "${Deno.execPath()}" run --quiet "${filter}"
  exit $?
fi`,
        );
        const r = await job.run(["backup", "daily"], { BACKY_RBD: bad });
        assertEquals(r.code, 1, r.stdout + r.stderr);
        assertIncludes(r.stderr, "verification of revision");
        assertIncludes(r.stderr, "differs from snapshot");
        const r2 = (await revisions(job.dir)).find((x) => x.id !== r1.id);
        assert(r2, "the failed revision's record is kept");
        assertEquals(r2.duration, undefined);
        assertEquals(r2.trust, "distrusted");
        assertIncludes(String(r2.error), "verification");
        // only the good revision's snapshot remains: the next run can still diff from it
        assertEquals(await snapNames(c, img.spec), [`backy-${r1.id}`]);
        const refused = await job.run(["restore", "-r", r2.id, "-"]);
        assertEquals(refused.code, 1);
        assertIncludes(refused.stderr, "incomplete");

        const r3 = await backupOk(job);
        assertEquals(stats(r3).mode, "diff");
        assertEquals(r3.parent, r1.id, "the corrupt revision is never a parent");
        const e3 = await exportBytes(c, `${img.spec}@backy-${r3.id}`);
        assertSameBytes(await restoreBytes(job, r3.id), e3, "restore after the failed one");
        assertSameBytes(await restoreBytes(job, r1.id), e1, "first revision");
      } finally {
        await job.cleanup();
        await img.remove();
      }
    },
  );
}

cephTest(cluster, "BACKY_RBD naming a missing binary: clear error", async (c) => {
  const img = await createTestImage(c, 4 * MiB);
  const job = await cephJob(c, img.spec, "chunked");
  try {
    const r = await job.run(["backup", "daily"], { BACKY_RBD: "/nonexistent/bin/rbd" });
    assertEquals(r.code, 1, r.stdout + r.stderr);
    assertIncludes(r.stderr, "cannot run rbd (/nonexistent/bin/rbd)");
    assertIncludes(r.stderr, "BACKY_RBD");
    assert(!r.stderr.includes("    at "), "no stack trace");
    assertEquals(await revisions(job.dir), []);
    assertEquals(await snapNames(c, img.spec), []);
    // the same job with the real rbd works
    const ok = await job.run(["backup", "daily"]);
    assertEquals(ok.code, 0, ok.stderr);
  } finally {
    await job.cleanup();
    await img.remove();
  }
});
