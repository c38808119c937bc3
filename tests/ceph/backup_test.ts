// Black-box tests of `backy backup` for ceph-rbd jobs against the real test cluster: a full
// backup, incremental ones with writes at known offsets, restores of every revision compared
// byte for byte with `rbd export` of the snapshot taken at the time, snapshot hygiene.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { assertIncludes, expectOk, revisions } from "../helpers.ts";
import {
  cephCluster,
  cephTest,
  createTestImage,
  expectedImage,
  pattern,
  rbdCli,
  reportIgnored,
  type Write,
  writeAt,
} from "./cluster.ts";
import { CephSnapshots } from "../../src/sources/ceph/snapshots.ts";
import { setupLogging, stopLogging } from "../../src/util/log.ts";
import {
  assertRevisions,
  assertSameBytes,
  type Backend,
  backupOk,
  cephJob,
  discardAt,
  exportBytes,
  MiB,
  OBJECT,
  restoreBytes,
  snapNames,
  stats,
} from "./jobs.ts";

const cluster = await cephCluster();
reportIgnored(cluster, "backup_test.ts");

for (const backend of ["cow", "chunked"] as Backend[]) {
  cephTest(
    cluster,
    `${backend}: full, then incremental backups; every revision restores to its snapshot`,
    async (c) => {
      // 7 objects, the last one partial; objects 2, 3 and 5 never written (holes)
      const size = 6 * OBJECT + 2 * MiB + 8192;
      const w0: Write[] = [
        { offset: 0, data: pattern(64 * 1024, 1) },
        { offset: 5 * MiB + 123, data: pattern(100_000, 2) },
        { offset: 17 * MiB, data: pattern(MiB, 3) },
        { offset: size - 4096, data: pattern(4096, 4) },
      ];
      const img = await createTestImage(c, size, w0);
      const job = await cephJob(c, img.spec, backend);
      try {
        await rbdCli(c, ["snap", "create", `${img.spec}@keepme`]);
        const expected: Uint8Array[] = [];
        const ids: string[] = [];

        // 1: full
        const r1 = await backupOk(job);
        assertEquals(stats(r1).mode, "full");
        assertEquals(stats(r1).snapshot, "rbd");
        assertEquals(stats(r1).verification, "sampled");
        assertEquals(r1.parent, null);
        assertEquals(await snapNames(c, img.spec), [`backy-${r1.id}`, "keepme"]);
        expected.push(await exportBytes(c, `${img.spec}@backy-${r1.id}`));
        ids.push(r1.id);
        // the test's own model of the image agrees with Ceph's export
        assertSameBytes(expected[0], expectedImage(size, w0), "export of the first snapshot");
        // only allocated objects cross rbd (0, 1, 4, 6)
        assert(Number(stats(r1).bytes_received) <= 4 * OBJECT, String(stats(r1).bytes_received));

        // 2: small writes into an existing object and a new one
        await writeAt(c, img.spec, [
          { offset: 5 * MiB + 200_000, data: pattern(4096, 5) },
          { offset: 8 * MiB + 5, data: pattern(13, 6) },
        ]);
        const r2 = await backupOk(job);
        assertEquals(stats(r2).mode, "diff");
        assertEquals(r2.parent, r1.id);
        const received2 = Number(stats(r2).bytes_received);
        assert(received2 > 0 && received2 <= 2 * OBJECT, `bytes_received ${received2}`);
        assertEquals(await snapNames(c, img.spec), [`backy-${r2.id}`, "keepme"]);
        expected.push(await exportBytes(c, `${img.spec}@backy-${r2.id}`));
        ids.push(r2.id);

        // 3: a discarded whole object, a zeroed range inside another, data across a boundary
        await discardAt(c, img.spec, [[0, OBJECT], [17 * MiB + 4096, 8192]]);
        await writeAt(c, img.spec, [{ offset: 24 * MiB - 1000, data: pattern(3000, 7) }]);
        const r3 = await backupOk(job);
        assertEquals(stats(r3).mode, "diff");
        assertEquals(r3.parent, r2.id);
        expected.push(await exportBytes(c, `${img.spec}@backy-${r3.id}`));
        ids.push(r3.id);
        assert(expected[2].subarray(0, OBJECT).every((b) => b === 0), "object 0 discarded");

        // 4: nothing changed
        const r4 = await backupOk(job);
        assertEquals(stats(r4).mode, "diff");
        assertEquals(stats(r4).bytes_received, 0);
        assertEquals((stats(r4).blocks as Record<string, number>).changed, 0);
        expected.push(await exportBytes(c, `${img.spec}@backy-${r4.id}`));
        ids.push(r4.id);
        assertEquals(await snapNames(c, img.spec), [`backy-${r4.id}`, "keepme"]);

        await assertRevisions(job, ids);
        for (let i = 0; i < ids.length; i++) {
          assertSameBytes(
            await restoreBytes(job, ids[i]),
            expected[i],
            `restore of revision ${i + 1}`,
          );
        }
        // numbers count from the newest; and a restore into a file
        assertSameBytes(await restoreBytes(job, "3"), expected[0], "restore -r 3");
        const file = join(job.dir, "..", "restored.img");
        expectOk(await job.run(["restore", "-r", ids[1], file]));
        assertSameBytes(await Deno.readFile(file), expected[1], "restore of revision 2 to a file");
        if (backend === "cow") {
          // the README's `rbd import $(backy find)` relies on the image file itself
          const found = expectOk(await job.run(["find", "-r", ids[2]])).stdout.trim();
          assertSameBytes(await Deno.readFile(found), expected[2], "image file of revision 3");
        }
        // the foreign snapshot still holds the image as it was before the first backup
        assertSameBytes(await exportBytes(c, `${img.spec}@keepme`), expected[0], "keepme");
      } finally {
        await job.cleanup();
        await img.remove();
      }
    },
  );
}

cephTest(cluster, "a protected stale backy snapshot is skipped with a warning", async (c) => {
  const img = await createTestImage(c, 2 * OBJECT, [{ offset: 0, data: pattern(4096, 11) }]);
  const job = await cephJob(c, img.spec, "chunked");
  try {
    await rbdCli(c, ["snap", "create", `${img.spec}@backy-stale`]);
    await rbdCli(c, ["snap", "protect", `${img.spec}@backy-stale`]);
    await rbdCli(c, ["snap", "create", `${img.spec}@backy-unprotected-stale`]);
    await rbdCli(c, ["snap", "create", `${img.spec}@keepme`]);
    const r = expectOk(await job.run(["backup", "daily"]));
    assertIncludes(r.stdout + r.stderr, "protected");
    assertIncludes(r.stdout + r.stderr, `${img.spec}@backy-stale`);
    const [r1] = await revisions(job.dir);
    assert(r1.duration !== undefined, "backup completed");
    assertEquals(await snapNames(c, img.spec), [`backy-${r1.id}`, "backy-stale", "keepme"]);
    // and again: still only the newest revision's own snapshot besides the two
    const r2 = await backupOk(job);
    assertEquals(stats(r2).mode, "diff");
    assertEquals(await snapNames(c, img.spec), [`backy-${r2.id}`, "backy-stale", "keepme"]);
  } finally {
    await job.cleanup();
    await img.remove();
  }
});

cephTest(cluster, "snapshot cleanup from a known list: a vanished one is no error", async (c) => {
  const img = await createTestImage(c, OBJECT, [{ offset: 0, data: pattern(4096, 12) }]);
  const dir = await Deno.makeTempDir({ prefix: "backy-cleanup-" });
  const confBefore = Deno.env.get("CEPH_CONF");
  try {
    for (const s of ["backy-a", "backy-b", "keepme"]) {
      await rbdCli(c, ["snap", "create", `${img.spec}@${s}`]);
    }
    Deno.env.set("CEPH_CONF", c.env.CEPH_CONF); // CephSnapshots' rbd uses the environment
    const [pool, image] = img.spec.split("/");
    const source = new CephSnapshots({ type: "ceph-rbd", pool, image, fullAlways: false });
    const logfile = join(dir, "backy.log");
    setupLogging({ verbose: false, logfile, console: "stderr" });
    // As listed before a backup; backy-gone was removed by hand since.
    await source.cleanupSnapshots("b", new Set(["backy-a", "backy-b", "backy-gone", "keepme"]));
    stopLogging();
    assertEquals(await snapNames(c, img.spec), ["backy-b", "keepme"]);
    const logged = await Deno.readTextFile(logfile);
    assertIncludes(logged, `Removed snapshot snapshot=${img.spec}@backy-a`);
    assert(!/WARNING/.test(logged), logged);
  } finally {
    stopLogging();
    if (confBefore === undefined) Deno.env.delete("CEPH_CONF");
    else Deno.env.set("CEPH_CONF", confBefore);
    await Deno.remove(dir, { recursive: true });
    await img.remove();
  }
});
