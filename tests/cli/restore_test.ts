/** Black-box: restore targets (spec 3.7): files, `-f`, devices, unwritable places. */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backy,
  BLOCK,
  bytesEqual,
  expectOk,
  fileExists,
  filesEqual,
  initJob,
  isRoot,
  listDir,
  revisions,
  sh,
  tempDir,
  writeImage,
} from "../helpers.ts";

/** A job with two revisions of a small image; returns the saved versions. */
async function twoRevisions(dir: string, backend: "cow" | "chunked") {
  const src = join(dir, "src.img");
  const job = join(dir, "job");
  await writeImage(src, [11, 0, 12], 2 * BLOCK + 4096);
  await initJob(job, src, backend);
  expectOk(await backy(["-b", job, "backup", "daily"]));
  const v1 = join(dir, "v1.img");
  await Deno.copyFile(src, v1);
  await writeImage(src, [13, 14, 0, 15]);
  expectOk(await backy(["-b", job, "backup", "daily"]));
  const v2 = join(dir, "v2.img");
  await Deno.copyFile(src, v2);
  return { src, job, v1, v2, revs: await revisions(job) };
}

for (const backend of ["chunked", "cow"] as const) {
  Deno.test(`${backend}: restore targets`, async (t) => {
    const dir = await tempDir();
    try {
      const { job, v1, v2, revs } = await twoRevisions(dir, backend);

      await t.step("a non-empty file is refused without -f and left untouched", async () => {
        const target = join(dir, "precious.img");
        await Deno.writeTextFile(target, "important data\n");
        const before = await Deno.stat(target);
        const r = await backy(["-b", job, "restore", "-r", "1", target]);
        assertEquals(r.code, 1);
        assertEquals(
          r.stderr,
          `Error: restore target ${target} exists and is not empty; use --force to overwrite it\n`,
        );
        assertEquals(await Deno.readTextFile(target), "important data\n");
        assertEquals((await Deno.stat(target)).mtime, before.mtime);
        assertEquals((await listDir(dir)).filter((n) => n.includes("backy-restore")), []);
      });

      await t.step("-f / --force overwrites it with the revision", async () => {
        const target = join(dir, "precious.img");
        expectOk(await backy(["-b", job, "restore", "-f", "-r", "1", target]));
        assert(await filesEqual(target, v1));
        // Overwriting a bigger file leaves no stale tail.
        await writeImage(target, [99, 98, 97, 96, 95]);
        expectOk(await backy(["-b", job, "restore", "--force", "-r", "1", target]));
        assert(await filesEqual(target, v1));
      });

      await t.step("an existing empty file needs no -f", async () => {
        const target = join(dir, "empty.img");
        await Deno.writeFile(target, new Uint8Array());
        expectOk(await backy(["-b", job, "restore", target]));
        assert(await filesEqual(target, v2));
      });

      await t.step("a killed restore's temp file is removed by the next restore", async () => {
        const target = join(dir, "again.img");
        // A pid that cannot be running (above the kernel's pid_max of 4194304).
        const stale = join(dir, ".again.img.backy-restore-99999999");
        await Deno.writeTextFile(stale, "half a restore");
        const other = join(dir, `.again.img.backy-restore-${Deno.pid}`); // a live process
        await Deno.writeTextFile(other, "someone else's restore");
        expectOk(await backy(["-b", job, "restore", target]));
        assert(await filesEqual(target, v2));
        assertEquals(await fileExists(stale), false);
        assertEquals(await Deno.readTextFile(other), "someone else's restore");
        await Deno.remove(other);
      });

      await t.step("a relative target is relative to the current directory", async () => {
        expectOk(await backy(["-b", job, "restore", "-r", revs[0].id, "rel.img"], { cwd: dir }));
        assert(await filesEqual(join(dir, "rel.img"), v1));
      });

      await t.step("/dev/null (a character device) works", async () => {
        const r = expectOk(await backy(["-b", job, "restore", "/dev/null"]));
        assertIncludes(r.stdout, "Restore complete");
      });

      await t.step("a target in a missing directory fails and creates nothing", async () => {
        const target = join(dir, "no", "such", "dir", "x.img");
        const r = await backy(["-b", job, "restore", target]);
        assertEquals(r.code, 1);
        assert(
          r.stderr.startsWith(`Error: cannot write restore target ${target}: `),
          r.stderr,
        );
        assertIncludes(r.stderr, "No such file or directory");
        assertEquals(await fileExists(join(dir, "no")), false);
      });

      await t.step("a directory target is refused", async () => {
        const r = await backy(["-b", job, "restore", dir]);
        assertEquals(r.code, 1);
        assertEquals(r.stderr, `Error: restore target ${dir} is a directory\n`);
      });

      await t.step({
        name: `a read-only filesystem fails cleanly${
          isRoot() ? "" : " (ignored: needs root to mount a read-only tmpfs)"
        }`,
        ignore: !isRoot(),
        fn: async () => {
          const mnt = join(dir, "ro");
          await Deno.mkdir(mnt);
          const m = await sh("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", mnt]);
          assertEquals(m.code, 0, m.err);
          try {
            const target = join(mnt, "x.img");
            const r = await backy(["-b", job, "restore", target]);
            assertEquals(r.code, 1);
            assert(r.stderr.startsWith(`Error: cannot write restore target ${target}: `));
            assertIncludes(r.stderr, "Read-only file system");
            assertEquals(await listDir(mnt), []);
          } finally {
            await sh("umount", [mnt]);
          }
        },
      });

      await t.step({
        name: `a block device (loop) needs -f, then is written in place, zeros included${
          isRoot() ? "" : " (ignored: needs root for a loop device)"
        }`,
        ignore: !isRoot(),
        fn: async () => {
          const backing = join(dir, "loop.img");
          await Deno.writeFile(backing, new Uint8Array(5 * BLOCK).fill(0xa5));
          const l = await sh("losetup", ["--find", "--show", backing]);
          assertEquals(l.code, 0, l.err);
          const dev = l.out.trim();
          try {
            const refused = await backy(["-b", job, "restore", "-r", "1", dev]);
            assertEquals(refused.code, 1);
            assertIncludes(refused.stderr, `restore target ${dev} is a block device`);
            assertIncludes(refused.stderr, "--force");
            expectOk(await backy(["-b", job, "restore", "-r", "1", "--force", dev]));
            const want = await Deno.readFile(v1);
            const f = await Deno.open(dev, { read: true });
            const got = new Uint8Array(want.length);
            let off = 0;
            while (off < got.length) {
              const n = await f.read(got.subarray(off));
              if (n === null) break;
              off += n;
            }
            f.close();
            assert(bytesEqual(got, want), "device holds revision 1, its hole as zeros");
          } finally {
            await sh("losetup", ["-d", dev]);
          }
        },
      });

      await t.step("older revisions still restore byte-identically", async () => {
        const out = join(dir, "final-v1");
        expectOk(await backy(["-b", job, "restore", "-r", revs[0].id, out]));
        assert(await filesEqual(out, v1));
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("restore refuses to read while nothing is restorable", async () => {
  const dir = await tempDir();
  try {
    const job = join(dir, "job");
    await initJob(job, join(dir, "src"), "chunked");
    const r = await backy(["-b", job, "restore", join(dir, "out")]);
    assertEquals(r.code, 1);
    assertEquals(r.stderr, `Error: Cannot find revision in ${job}: 'latest'\n`);
    assertEquals(await fileExists(join(dir, "out")), false);
    const s = expectOk(await backy(["-b", job, "status"]));
    assertEquals(
      s.stdout.trimEnd().split("\n").at(-1),
      "0 revisions containing 0 Bytes data (estimated)",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
