/**
 * Black-box, as root on real XFS with reflink (loop device): the space a cow revision
 * costs, `dd if=last`, and a full disk during a backup. Without root these say `ignored`.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backy,
  BLOCK,
  dfUsedKiB,
  expectOk,
  filesEqual,
  fillUp,
  initJob,
  MiB,
  patchFile,
  revisions,
  sh,
  tempDir,
  writeImage,
  xfsMount,
  xfsUnavailable,
} from "../helpers.ts";

const unavailable = await xfsUnavailable();

Deno.test({
  name: `xfs reflink: a second revision with 1 % changed costs about 1 % ${
    unavailable ? `(ignored: ${unavailable})` : ""
  }`,
  ignore: unavailable !== undefined,
  fn: async () => {
    const fs = await xfsMount(512);
    const dir = await tempDir();
    try {
      const src = join(dir, "src.img"); // outside the measured filesystem
      const job = join(fs.dir, "job");
      await writeImage(src, Array.from({ length: 64 }, (_, i) => 1000 + i)); // 256 MiB random
      const v1 = join(dir, "v1.img");
      await Deno.copyFile(src, v1);
      await initJob(job, src); // no --backend: the probe must find reflink here
      assertMatch(await Deno.readTextFile(join(job, "config")), /^backend: cow$/m);

      const before = await dfUsedKiB(fs.dir);
      const b1 = expectOk(await backy(["-b", job, "backup", "daily"]));
      const used1 = await dfUsedKiB(fs.dir);
      const cost1 = (used1 - before) / 1024;
      assert(cost1 > 250 && cost1 < 270, `first revision costs ${cost1.toFixed(1)} MiB`);

      // ~1 % of the bytes (2.5 MiB), all inside block 17.
      await patchFile(src, 17 * BLOCK + 100_000, 2_600_000, 77);
      const b2 = expectOk(await backy(["-b", job, "backup", "daily"]));
      const used2 = await dfUsedKiB(fs.dir);
      const cost2 = (used2 - used1) / 1024;
      // One changed 4 MiB block is rewritten whole: 1.6 % of the image, plus metadata.
      assert(cost2 >= 2 && cost2 <= 8, `second revision costs ${cost2.toFixed(1)} MiB`);
      for (const out of [b1.stdout, b2.stdout]) {
        assert(!out.includes("REFLINK NOT SUPPORTED"), out);
      }
      const [A, B] = await revisions(job);
      assertEquals(B.parent, A.id);
      assertEquals(B.bytesWritten, BLOCK);
      assertEquals((B.raw.stats as { blocks: unknown }).blocks, {
        changed: 1,
        unchanged: 63,
        zero: 0,
      });

      const out = join(dir, "dd.img");
      const dd = await sh("dd", [`if=${join(job, "last")}`, `of=${out}`, "bs=4M"]);
      assertEquals(dd.code, 0, dd.err);
      assert(await filesEqual(out, src), "dd if=last equals the source");
      await Deno.remove(out);
      const old = join(dir, "old.img");
      expectOk(await backy(["-b", job, "restore", "-r", A.id, old]));
      assert(await filesEqual(old, v1), "the first revision is untouched by the second");
    } finally {
      await fs.cleanup();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

for (const backend of ["cow", "chunked"] as const) {
  Deno.test({
    name: `${backend}: disk full during a backup ${unavailable ? `(ignored: ${unavailable})` : ""}`,
    ignore: unavailable !== undefined,
    fn: async () => {
      const fs = await xfsMount(320);
      const dir = await tempDir();
      try {
        const src = join(dir, "src.img");
        const job = join(fs.dir, "job");
        await writeImage(src, [1, 0, 2]);
        const v1 = join(dir, "v1.img");
        await Deno.copyFile(src, v1);
        await initJob(job, src, backend);
        expectOk(await backy(["-b", job, "backup", "daily"]));
        const [A] = await revisions(job);
        await fillUp(fs.dir, 24);

        // 40 MiB of new data into 24 MiB of free space.
        await writeImage(src, [1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        const full = await backy(["-b", job, "backup", "daily"]);
        assertEquals(full.code, 1, full.stdout);
        assertMatch(full.stderr, /^Error: .*No space left on device/);
        assertEquals(full.stderr.match(/No space left/g)?.length, 1, full.stderr);
        assert(!full.stderr.includes("    at "), "no stack trace");
        const s = expectOk(await backy(["-b", job, "status"]));
        assertIncludes(s.stdout, A.id);

        const out = join(dir, "a.img");
        expectOk(await backy(["-b", job, "restore", "-r", A.id, out]));
        assert(await filesEqual(out, v1), "the earlier revision restores identically");
        await Deno.remove(out);

        // The failed attempt gave its space back (its image, or the chunks it created).
        const avail = await sh("df", ["-k", "--output=avail", fs.dir]);
        const freeMiB = Number(avail.out.trim().split("\n").at(-1)) / 1024;
        assert(freeMiB > 20, `${freeMiB.toFixed(1)} MiB free after the failure`);

        // A smaller source (14 MiB of new data) fits again.
        await writeImage(src, [1, 0, 2, 12, 13, 14, 15], 6 * BLOCK + 2 * MiB);
        const again = await backy(["-b", job, "backup", "daily"]);
        assertEquals(again.code, 0, again.stderr);
        const revs = await revisions(job);
        assertEquals(revs.length, 2, "the failed revision is gone");
        assertEquals(revs[1].parent, A.id);
        expectOk(await backy(["-b", job, "restore", out]));
        assert(await filesEqual(out, src));
        await Deno.remove(out);
        expectOk(await backy(["-b", job, "restore", "-r", A.id, out]));
        assert(await filesEqual(out, v1));
      } finally {
        await fs.cleanup();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
