// Black-box tests against the real test cluster: images resized between backups (grown,
// shrunk, shrunk and regrown), and a snapshot deleted behind backy's back.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  cephCluster,
  cephTest,
  createTestImage,
  pattern,
  rbdCli,
  reportIgnored,
  writeAt,
} from "./cluster.ts";
import {
  assertSameBytes,
  type Backend,
  backupOk,
  cephJob,
  exportBytes,
  MiB,
  restoreBytes,
  snapNames,
  stats,
} from "./jobs.ts";

const cluster = await cephCluster();
reportIgnored(cluster, "resize_test.ts");

async function resize(c: Parameters<typeof rbdCli>[0], spec: string, size: number) {
  await rbdCli(c, ["resize", "--no-progress", "--allow-shrink", "--size", `${size}B`, spec]);
}

for (const backend of ["cow", "chunked"] as Backend[]) {
  cephTest(cluster, `${backend}: image grown and shrunk between backups`, async (c) => {
    const size1 = 10 * MiB + 512;
    const img = await createTestImage(c, size1, [
      { offset: 1 * MiB, data: pattern(MiB, 21) },
      { offset: size1 - 2048, data: pattern(2048, 22) }, // the old partial last block
    ]);
    const job = await cephJob(c, img.spec, backend);
    const revs: { id: string; size: number; bytes: Uint8Array }[] = [];
    const step = async (size: number, mode: string) => {
      const r = await backupOk(job);
      assertEquals(stats(r).mode, mode, `mode of revision ${revs.length + 1}`);
      const bytes = await exportBytes(c, `${img.spec}@backy-${r.id}`);
      assertEquals(bytes.length, size);
      revs.push({ id: r.id, size, bytes });
    };
    try {
      await step(size1, "full");

      // grown: new data right after the old end (inside the old last block) and far beyond
      const size2 = 22 * MiB + 4096;
      await resize(c, img.spec, size2);
      await writeAt(c, img.spec, [
        { offset: size1 + 100, data: pattern(5000, 23) },
        { offset: 20 * MiB, data: pattern(65536, 24) },
      ]);
      await step(size2, "diff");
      // the bytes the old tail left stay, the grown space in between reads as zeros
      assert(revs[1].bytes.subarray(size1 + 5100, 20 * MiB).every((b) => b === 0));

      // shrunk below a written range, to a size that is not a multiple of 4 MiB
      const size3 = 6 * MiB + 1024;
      await resize(c, img.spec, size3);
      await writeAt(c, img.spec, [{ offset: size3 - 512, data: pattern(512, 25) }]);
      await step(size3, "diff");

      // shrunk and grown again between two backups: the cut data must not come back
      await resize(c, img.spec, 1 * MiB + 512);
      await resize(c, img.spec, 13 * MiB);
      await writeAt(c, img.spec, [{ offset: 12 * MiB, data: pattern(4096, 26) }]);
      await step(13 * MiB, "diff");
      assert(revs[3].bytes.subarray(1 * MiB + 512, 12 * MiB).every((b) => b === 0));

      for (const [i, r] of revs.entries()) {
        assertSameBytes(await restoreBytes(job, r.id), r.bytes, `restore of revision ${i + 1}`);
      }
    } finally {
      await job.cleanup();
      await img.remove();
    }
  });
}

for (const backend of ["cow", "chunked"] as Backend[]) {
  cephTest(
    cluster,
    `${backend}: snapshot deleted behind backy's back: the next backup is full and correct`,
    async (c) => {
      const size = 16 * MiB;
      const img = await createTestImage(c, size, [
        { offset: 0, data: pattern(MiB, 31) },
        { offset: 9 * MiB, data: pattern(MiB, 32) },
      ]);
      const job = await cephJob(c, img.spec, backend);
      try {
        const r1 = await backupOk(job);
        const e1 = await exportBytes(c, `${img.spec}@backy-${r1.id}`);
        await rbdCli(c, ["snap", "rm", "--no-progress", `${img.spec}@backy-${r1.id}`]);
        await writeAt(c, img.spec, [{ offset: 9 * MiB + 4096, data: pattern(4096, 33) }]);
        const r2 = await backupOk(job);
        assertEquals(stats(r2).mode, "full");
        // everything allocated crossed rbd again: objects 0 and 2
        assertEquals(stats(r2).bytes_received, 2 * 4 * MiB);
        const e2 = await exportBytes(c, `${img.spec}@backy-${r2.id}`);
        assertEquals(await snapNames(c, img.spec), [`backy-${r2.id}`]);
        // and the one after is incremental again
        await writeAt(c, img.spec, [{ offset: 15 * MiB, data: pattern(100, 34) }]);
        const r3 = await backupOk(job);
        assertEquals(stats(r3).mode, "diff");
        assertEquals(r3.parent, r2.id);
        const e3 = await exportBytes(c, `${img.spec}@backy-${r3.id}`);
        assertSameBytes(await restoreBytes(job, r1.id), e1, "restore of revision 1");
        assertSameBytes(await restoreBytes(job, r2.id), e2, "restore of revision 2");
        assertSameBytes(await restoreBytes(job, r3.id), e3, "restore of revision 3");
      } finally {
        await job.cleanup();
        await img.remove();
      }
    },
  );
}
