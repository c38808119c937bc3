/**
 * `backy mount` through the real kernel (root; elsewhere these are ignored, with the reason
 * in the test name): both backends, every file compared with `restore` output, the README's
 * recipes (dd, qemu-img convert, a qcow2 overlay, a partition loop-mounted read-only), EROFS,
 * concurrent readers, find, expiry postponed while mounted, SIGTERM and SIGKILL of the mount
 * process, `backy umount`, and a base directory mount.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import YAML from "yaml";
import {
  assertIncludes,
  backy,
  BLOCK,
  corrupt,
  expectOk,
  filesEqual,
  initJob,
  listDir,
  MiB,
  randomBytes,
  revisions,
  sh,
  spawnBacky,
  tempDir,
  writeImage,
  xfsMount,
  xfsUnavailable,
} from "../helpers.ts";
import { alive, fuseTest, mountDaemon, mountsAt, unmountOk, waitFor } from "./harness.ts";

/** A job with three revisions of a sparse image that changes size (last block short). */
async function threeRevisions(dir: string, backend: "cow" | "chunked", jobDir = join(dir, "job")) {
  const src = join(dir, "src.img");
  await writeImage(src, [1, 0, 2, 3], 4 * BLOCK);
  await initJob(jobDir, src, backend);
  expectOk(await backy(["-b", jobDir, "backup", "daily"]));
  await writeImage(src, [1, 4, 0, 3, 5], 4 * BLOCK + MiB + 512);
  expectOk(await backy(["-b", jobDir, "backup", "daily,weekly"]));
  await writeImage(src, [6, 4, 0, 3], 3 * BLOCK + 4096);
  expectOk(await backy(["-b", jobDir, "backup", "daily"]));
  return { job: jobDir, src, revs: await revisions(jobDir) };
}

/** Every revision's file in the mount equals `restore` of it. */
async function compareWithRestore(dir: string, job: string, mp: string, ids: string[]) {
  for (const id of ids) {
    const out = join(dir, `restored-${id}.img`);
    expectOk(await backy(["-b", job, "restore", "-r", id, out]));
    assert(await filesEqual(join(mp, id), out), `${id}: mount and restore differ`);
    assertEquals((await Deno.stat(join(mp, id))).size, (await Deno.stat(out)).size);
    await Deno.remove(out);
  }
}

await fuseTest(
  "mount (chunked): files equal restore, names, find, EROFS, concurrent readers, dd, umount",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const { job, revs } = await threeRevisions(dir, "chunked");
    const ids = revs.map((r) => r.id);
    const m = await mountDaemon(job, mp);
    try {
      assertEquals(await mountsAt(mp), [`fuse.backy ${job}`]);
      assertEquals(await listDir(mp), [...ids, "daily", "last", "weekly"].sort());
      assertEquals(await Deno.readLink(join(mp, "last")), ids[2]);
      assertEquals(await Deno.readLink(join(mp, "daily")), ids[2]);
      assertEquals(await Deno.readLink(join(mp, "weekly")), ids[1]);
      const st = await Deno.stat(join(mp, ids[1]));
      assertEquals(st.size, 4 * BLOCK + MiB + 512);
      assertEquals(st.mode! & 0o7777, 0o400);
      assertEquals(
        st.mtime!.getTime(),
        Date.parse(revs[1].timestamp.replace(" ", "T").replace(/(\.\d{3})\d*/, "$1")),
      );
      await compareWithRestore(dir, job, mp, ids);

      // The README recipe, and `find` pointing into the mount.
      const dd = await sh("sh", [
        "-c",
        `dd if=${mp}/last bs=4M status=none | cmp - ${join(dir, "src.img")}`,
      ]);
      assertEquals(dd.code, 0, dd.err);
      const found = expectOk(await backy(["-b", job, "find", "-r", "weekly"]));
      assertEquals(found.stdout, `${mp}/${ids[1]}\n`);

      // Concurrent readers: all revisions at once, one of them twice.
      const refs = join(dir, "refs");
      await Deno.mkdir(refs);
      for (const id of ids) {
        expectOk(await backy(["-b", job, "restore", "-r", id, join(refs, id)]));
      }
      const results = await Promise.all(
        [...ids, ids[0]].map((id) => sh("cmp", [join(mp, id), join(refs, id)])),
      );
      assertEquals(results.map((r) => r.code), [0, 0, 0, 0]);

      // Read-only: nothing can be written, created or removed.
      for (
        const cmd of [
          `dd if=/dev/zero of=${mp}/${ids[0]} bs=1 count=1 conv=notrunc`,
          `touch ${mp}/new`,
          `rm -f ${mp}/${ids[0]}`,
          `mkdir ${mp}/d`,
          `ln -s x ${mp}/y`,
        ]
      ) {
        const r = await sh("sh", ["-c", cmd]);
        assert(r.code !== 0, cmd);
        assertIncludes(r.err, "Read-only file system", cmd);
      }
      await compareWithRestore(dir, job, mp, [ids[0]]);

      await unmountOk(m);
      assertEquals(await mountsAt(mp), []);
      assertEquals(await listDir(mp), []);
      const nf = await backy(["-b", job, "find", "-r", "weekly"]);
      assertEquals(nf.code, 1);
      assertEquals(
        nf.stderr,
        `Error: revision ${ids[1]} is stored in the chunked backend and has no image file; ` +
          `mount the job ('backy -b ${job} mount MOUNTPOINT') to get one, or use ` +
          `'backy restore -r ${ids[1]} -' to stream it\n`,
      );
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount (cow on reflink XFS): files equal restore and the cow image files; find names the image",
  { "mkfs.xfs": "xfsprogs", losetup: "mount" },
  async () => {
    const why = await xfsUnavailable();
    if (why) throw new Error(why);
    const xfs = await xfsMount(300);
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    try {
      const { job, revs } = await threeRevisions(xfs.dir, "cow", join(xfs.dir, "job"));
      assertEquals(revs.map((r) => r.raw.backend), ["cow", "cow", "cow"]);
      const m = await mountDaemon(job, mp);
      try {
        await compareWithRestore(dir, job, mp, revs.map((r) => r.id));
        for (const r of revs) assert(await filesEqual(join(mp, r.id), join(job, r.id)));
        // find keeps naming the cow image itself, mounted or not.
        const found = expectOk(await backy(["-b", job, "find", "-r", "last"]));
        assertEquals(found.stdout, `${join(job, revs[2].id)}\n`);
        await unmountOk(m);
      } finally {
        await m.stop();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
      await xfs.cleanup();
    }
  },
);

await fuseTest(
  "mount recipes: qemu-img convert from the mount; a qcow2 overlay writes nothing to the backup",
  { "qemu-img": "qemu-utils", "qemu-io": "qemu-utils" },
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const { job, revs } = await threeRevisions(dir, "chunked");
    const id = revs[1].id;
    const m = await mountDaemon(job, mp);
    try {
      const ref = join(dir, "ref.img");
      expectOk(await backy(["-b", job, "restore", "-r", id, ref]));
      const conv = await sh("qemu-img", ["convert", "-O", "raw", join(mp, id), join(dir, "c.raw")]);
      assertEquals(conv.code, 0, conv.err);
      assert(await filesEqual(join(dir, "c.raw"), ref));

      const ov = join(dir, "overlay.qcow2");
      const create = await sh("qemu-img", [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        join(mp, id),
        "-F",
        "raw",
        ov,
      ]);
      assertEquals(create.code, 0, create.err);
      const write = await sh("qemu-io", ["-c", "write -P 0x55 4096 65536", ov]);
      assertEquals(write.code, 0, write.err);
      const out = join(dir, "ov.raw");
      assertEquals((await sh("qemu-img", ["convert", "-O", "raw", ov, out])).code, 0);
      const got = await Deno.readFile(out);
      const want = await Deno.readFile(ref);
      assert(got.subarray(4096, 4096 + 65536).every((b) => b === 0x55), "overlay has the write");
      want.fill(0x55, 4096, 4096 + 65536);
      assert(Buffer.compare(got, want) === 0, "overlay = revision + the write");
      // The backup is untouched.
      assert(await filesEqual(join(mp, id), ref));
      await unmountOk(m);
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount recipe: a partition of a revision loop-mounted read-only by its offset (file restore)",
  { sfdisk: "fdisk", "mkfs.ext4": "e2fsprogs", losetup: "mount" },
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    const fsdir = join(dir, "fs");
    const files = join(dir, "files");
    for (const d of [mp, fsdir, files]) await Deno.mkdir(d);
    // A disk: an MBR partition table, one partition at sector 2048 holding ext4 with files.
    const src = join(dir, "disk.img");
    await Deno.writeTextFile(join(files, "hello.txt"), "restore me\n");
    await Deno.mkdir(join(files, "etc"));
    const big = new Uint8Array(3 * MiB + 17).map((_, i) => (i * 7919) % 251);
    await Deno.writeFile(join(files, "etc", "data.bin"), big);
    await Deno.writeFile(src, new Uint8Array(0));
    await Deno.truncate(src, 48 * MiB);
    const part = await sh("sh", [
      "-c",
      `printf 'label: dos\\nstart=2048, type=83\\n' | sfdisk -q ${src}`,
    ]);
    assertEquals(part.code, 0, part.err);
    const mk = await sh("mkfs.ext4", ["-q", "-F", "-d", files, "-E", "offset=1048576", src, "40M"]);
    assertEquals(mk.code, 0, mk.err);
    const job = join(dir, "job");
    await initJob(job, src, "chunked");
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const m = await mountDaemon(job, mp);
    let loop = "";
    try {
      // The recipe: the partition's start from the image in the mount, then losetup -r -o.
      const table = JSON.parse((await sh("sfdisk", ["-J", join(mp, "last")])).out);
      const start = table.partitiontable.partitions[0].start * 512;
      assertEquals(start, 1048576);
      const lo = await sh("losetup", ["-r", "-o", String(start), "-f", "--show", join(mp, "last")]);
      assertEquals(lo.code, 0, lo.err);
      loop = lo.out.trim();
      const mnt = await sh("mount", ["-o", "ro,noload", loop, fsdir]);
      assertEquals(mnt.code, 0, mnt.err);
      try {
        assertEquals(await Deno.readTextFile(join(fsdir, "hello.txt")), "restore me\n");
        assert(await filesEqual(join(fsdir, "etc", "data.bin"), join(files, "etc", "data.bin")));
        // Busy while the loop device holds a file: umount says so and changes nothing.
        const busy = await backy(["umount", mp]);
        assertEquals(busy.code, 1);
        assertIncludes(busy.stderr, `Error: ${mp} is busy`);
        assertIncludes(busy.stderr, "use 'backy umount --lazy'");
        assert(await alive(m.pid));
      } finally {
        await sh("umount", [fsdir]);
        await sh("losetup", ["-d", loop]);
      }
      await waitFor("the loop device to let go", async () => {
        const r = await sh("losetup", ["-j", join(mp, "last")]);
        return r.out.trim() === "";
      });
      await unmountOk(m);
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount: SIGKILL leaves 'not connected'; mount refuses it, backy umount cleans it",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const { job } = await threeRevisions(dir, "chunked");
    const child = spawnBacky(["-b", job, "mount", mp]);
    try {
      await waitFor("the mount", async () => (await mountsAt(mp)).length === 1);
      await waitFor(
        "its files",
        async () => (await listDir(mp).catch((): string[] => [])).includes("last"),
      );
      child.kill("SIGKILL");
      await child.status;
      const ls = await sh("ls", [mp]);
      assert(ls.code !== 0);
      assertIncludes(ls.err, "Transport endpoint is not connected");
      const again = await backy(["-b", job, "mount", mp]);
      assertEquals(again.code, 1);
      assertEquals(
        again.stderr,
        `Error: ${mp} is a mount whose process ended (not connected); clean it with ` +
          `'backy umount ${mp}'\n`,
      );
      const um = expectOk(await backy(["umount", mp]));
      assertEquals(um.stdout, `Unmounted ${mp} (its process had ended: it was not connected)\n`);
      assertEquals(await mountsAt(mp), []);
      assertEquals(await listDir(mp), []);
      // And the read lock died with the process: expiry may remove data again.
      const flock = await sh("flock", ["-n", "-x", join(job, ".purge"), "true"]);
      assertEquals(flock.code, 0);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      if ((await mountsAt(mp)).length) await sh("umount", ["-l", mp]);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount: SIGTERM unmounts (lazily when busy: an open file is served until closed), exit 0",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const { job, src } = await threeRevisions(dir, "chunked");
    const child = spawnBacky(["-b", job, "mount", mp]);
    try {
      await waitFor(
        "the mount",
        async () => (await listDir(mp).catch((): string[] => [])).includes("last"),
      );
      // Idle: SIGTERM unmounts at once.
      child.kill("SIGTERM");
      const out = await child.output();
      assertEquals(out.code, 0);
      assertEquals(await mountsAt(mp), []);
      assertIncludes(new TextDecoder().decode(out.stdout), `Unmounted ${mp}`);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    const busy = spawnBacky(["-b", job, "mount", mp]);
    try {
      await waitFor(
        "the mount",
        async () => (await listDir(mp).catch((): string[] => [])).includes("last"),
      );
      // A reader holding the file open, reading it only after the signal.
      const reader = new Deno.Command("sh", {
        args: ["-c", `exec 3<${mp}/last; echo open; read _; cmp - ${src} <&3 && echo same`],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const lines = reader.stdout.pipeThrough(new TextDecoderStream()).getReader();
      assertEquals((await lines.read()).value, "open\n");
      busy.kill("SIGTERM");
      await waitFor("the lazy detach", async () => (await mountsAt(mp)).length === 0);
      assert(await alive(busy.pid), "still serving the open file");
      const w = reader.stdin.getWriter();
      await w.write(new TextEncoder().encode("go\n"));
      await w.close();
      assertEquals((await lines.read()).value, "same\n");
      assertEquals((await reader.status).code, 0);
      const st = await busy.status;
      assertEquals(st.code, 0);
      const stdout = new TextDecoder().decode(await new Response(busy.stdout).arrayBuffer());
      assertIncludes(stdout, `Mounted ${job} on ${mp}`);
      assertIncludes(stdout, "detaching it now, serving open files until closed");
      assertIncludes(stdout, `Unmounted ${mp}`);
    } finally {
      try {
        busy.kill("SIGKILL");
      } catch { /* gone */ }
      if ((await mountsAt(mp)).length) await sh("umount", ["-l", mp]);
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount: expiry postpones removing data while mounted; after umount it removes it",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const { job, revs } = await threeRevisions(dir, "chunked");
    const cfg = YAML.parse(await Deno.readTextFile(join(job, "config")));
    cfg.schedule = { daily: { interval: 86400, keep: 5 }, weekly: { interval: 604800, keep: 5 } };
    await Deno.writeTextFile(join(job, "config"), YAML.stringify(cfg), { mode: 0o600 });
    // A revision expiry removes at once: its only tag is not in the schedule (and it is not
    // the newest, which expiry always keeps).
    expectOk(await backy(["-b", job, "backup", "--force", "temp"]));
    const temp = (await revisions(job)).at(-1)!.id;
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const newest = (await revisions(job)).at(-1)!.id;
    const m = await mountDaemon(job, mp);
    try {
      const ref = join(dir, "ref.img");
      expectOk(await backy(["-b", job, "restore", "-r", temp, ref]));
      const ex = expectOk(await backy(["-b", job, "expire"]));
      assertIncludes(ex.stdout, "Not removing data now");
      assertIncludes(ex.stdout, "data removal postponed");
      // Still there and served, byte for byte.
      assertEquals(await Deno.readLink(join(mp, "temp")), temp);
      assert(await filesEqual(join(mp, temp), ref));
      assertEquals((await revisions(job)).map((r) => r.id), [
        ...revs.map((r) => r.id),
        temp,
        newest,
      ]);
      await unmountOk(m);
      const ex2 = expectOk(await backy(["-b", job, "expire"]));
      assertIncludes(ex2.stdout, `Removing expired revision id=${temp}`);
      assertEquals((await revisions(job)).map((r) => r.id), [...revs.map((r) => r.id), newest]);
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest(
  "mount --all: one folder per job of a base directory; find points into it",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    const base = join(dir, "base");
    await Deno.mkdir(mp);
    await Deno.mkdir(base, { mode: 0o700 });
    const a = await threeRevisions(dir, "chunked", join(base, "vm-a"));
    await Deno.mkdir(join(base, "not-a-job"));
    const m = await mountDaemon(base, mp, ["--all"]);
    try {
      assertEquals(await mountsAt(mp), [`fuse.backy-base ${base}`]);
      assertEquals(await listDir(mp), ["vm-a"]);
      await compareWithRestore(dir, a.job, join(mp, "vm-a"), a.revs.map((r) => r.id));
      const found = expectOk(await backy(["-b", a.job, "find", "-r", "last"]));
      assertEquals(found.stdout, `${mp}/vm-a/${a.revs[2].id}\n`);
      // A job created while mounted shows up.
      await initJob(join(base, "vm-b"), a.src, "chunked");
      expectOk(await backy(["-b", join(base, "vm-b"), "backup", "daily"]));
      await waitFor("vm-b", async () => (await listDir(mp)).includes("vm-b"));
      assert(await filesEqual(join(mp, "vm-b", "last"), a.src));
      await unmountOk(m);
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

await fuseTest("mount and umount: clear errors for wrong mount points", {}, async () => {
  const dir = await tempDir();
  try {
    const { job } = await threeRevisions(dir, "chunked");
    const missing = join(dir, "nope");
    const r1 = await backy(["-b", job, "mount", missing]);
    assertEquals([r1.code, r1.stderr], [
      1,
      `Error: mount point ${missing} does not exist; create an empty directory first\n`,
    ]);
    const r2 = await backy(["-b", job, "mount", join(dir, "src.img")]);
    assertEquals(r2.stderr, `Error: mount point ${join(dir, "src.img")} is not a directory\n`);
    await Deno.mkdir(join(job, "inside"));
    const r3 = await backy(["-b", job, "mount", join(job, "inside")]);
    assertEquals(
      r3.stderr,
      `Error: mount point ${join(job, "inside")} is inside ${job}; choose one outside\n`,
    );
    const r4 = await backy(["-b", dir, "mount", "--all", join(dir, "x")]);
    assertEquals(r4.code, 1);
    const r5 = await backy(["-b", job, "mount", "--all", dir]);
    assertEquals(r5.stderr, `Error: ${job} is a job directory; mount it without --all\n`);
    const u1 = await backy(["umount", dir]);
    assertEquals([u1.code, u1.stderr], [1, `Error: nothing is mounted on ${dir}\n`]);
    const u2 = await backy(["umount", "/proc"]);
    assertEquals(u2.code, 1);
    assertIncludes(u2.stderr, "Error: /proc is not a backy mount (proc from proc)");
    // Mounted twice on one place: refused.
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const m = await mountDaemon(job, mp);
    try {
      const twice = await backy(["-b", job, "mount", "-d", mp]);
      assertEquals(twice.stderr, `Error: ${job} is already mounted on ${mp}\n`);
      await unmountOk(m);
    } finally {
      await m.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

await fuseTest(
  "mount: a corrupt chunk gives EIO for its block only; the rest reads right; logged",
  {},
  async () => {
    const dir = await tempDir();
    const mp = join(dir, "mnt");
    await Deno.mkdir(mp);
    const src = join(dir, "src.img");
    await writeImage(src, [1, 2, 3, 4, 5]);
    const job = join(dir, "job");
    await initJob(job, src, "chunked");
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const h = createHash("sha256").update(randomBytes(BLOCK, 3)).digest("hex");
    await corrupt(join(job, "chunks", h.slice(0, 2), h), 4096, new Uint8Array(16).fill(9));
    const m = await mountDaemon(job, mp);
    try {
      // Blocks through the mount against the source (bash for <(...)).
      const bash = (skip: number, count = 1) =>
        sh("bash", [
          "-c",
          `set -o pipefail; dd if=${mp}/last bs=4M skip=${skip} count=${count} status=none | ` +
          `cmp - <(dd if=${src} bs=4M skip=${skip} count=${count} status=none)`,
        ]);
      assertEquals((await bash(0, 2)).code, 0);
      const bad = await bash(2);
      assert(bad.code !== 0);
      assertIncludes(bad.err, "Input/output error");
      assertEquals((await bash(3, 2)).code, 0);
      // A read of just the bytes before and after the damaged block.
      const edge = await sh("bash", [
        "-c",
        `dd if=${mp}/last bs=4096 skip=${2 * 1024 - 1} count=1 status=none | ` +
        `cmp - <(dd if=${src} bs=4096 skip=${2 * 1024 - 1} count=1 status=none) && ` +
        `dd if=${mp}/last bs=4096 skip=${3 * 1024} count=1 status=none | ` +
        `cmp - <(dd if=${src} bs=4096 skip=${3 * 1024} count=1 status=none)`,
      ]);
      assertEquals(edge.code, 0, edge.err);
      const log = await Deno.readTextFile(join(job, "backy.log"));
      assertEquals(log.split("\n").filter((l) => l.includes("Damaged block")).length, 1, log);
      assertIncludes(log, `offset=${2 * BLOCK} bytes=${2 * BLOCK}-${3 * BLOCK - 1}`);
      await unmountOk(m);
    } finally {
      await m.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
