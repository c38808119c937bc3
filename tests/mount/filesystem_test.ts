/**
 * The filesystem behind a mount, driven with real FUSE requests (the bytes the kernel
 * sends) against a real job directory and the real data-path Workers, without the kernel:
 * runs anywhere, also without root. Covers names, attributes, reads compared with the
 * source, EROFS for anything that writes, EIO only for a damaged block's range (logged
 * once), SEEK_DATA/SEEK_HOLE, and a base directory's job folders.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { logger, setupLogging, stopLogging } from "../../src/util/log.ts";
import { JobDir } from "../../src/repo/jobdir.ts";
import { WorkerPool } from "../../src/backup/pool.ts";
import { BaseView } from "../../src/mount/base.ts";
import { BlockCache } from "../../src/mount/block_cache.ts";
import { MountFs, type MountRoot, type Reply } from "../../src/mount/filesystem.ts";
import { JobView } from "../../src/mount/jobview.ts";
import { BlockSource } from "../../src/mount/reader.ts";
import { Errno, Op, type Request, SEEK_DATA, SEEK_HOLE } from "../../src/mount/protocol.ts";
import {
  assertIncludes,
  backy,
  BLOCK,
  bytesEqual,
  corrupt,
  expectOk,
  initJob,
  MiB,
  randomBytes,
  revisions,
  tempDir,
  writeImage,
} from "../helpers.ts";

const enc = new TextEncoder();
let unique = 1n;

function req(opcode: number, nodeid: number, body: Uint8Array = new Uint8Array()): Request {
  return { opcode, unique: unique++, nodeid, uid: 0, gid: 0, pid: 1, body };
}

function le(...fields: [4 | 8, number][]): Uint8Array {
  const out = new Uint8Array(fields.reduce((s, [w]) => s + w, 0));
  const v = new DataView(out.buffer);
  let at = 0;
  for (const [w, val] of fields) {
    if (w === 4) v.setUint32(at, val, true);
    else v.setBigUint64(at, BigInt(val), true);
    at += w;
  }
  return out;
}

function payload(r: Reply): DataView {
  assertEquals(r.error, 0, `errno ${r.error}`);
  const bytes = r.parts[0] ?? new Uint8Array();
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A mounted-like filesystem over `root`, and a way to tear it down. */
function mountFs(root: MountRoot) {
  const pool = new WorkerPool(1);
  const fs = new MountFs(
    root,
    new BlockSource(pool, new BlockCache(4), logger("mount"), 2),
    logger("mount"),
  );
  return {
    fs,
    close: () => {
      pool.terminate();
      "job" in root ? root.job.close() : root.base.close();
    },
  };
}

async function lookup(fs: MountFs, parent: number, name: string) {
  const r = await fs.handle(req(Op.LOOKUP, parent, enc.encode(name + "\0")));
  if (r.error) return { error: r.error, nodeid: 0, size: 0, mode: 0, mtime: 0 };
  const v = payload(r);
  return {
    error: 0,
    nodeid: Number(v.getBigUint64(0, true)),
    size: Number(v.getBigUint64(40 + 8, true)),
    mode: v.getUint32(40 + 60, true),
    mtime: Number(v.getBigUint64(40 + 32, true)),
  };
}

async function open(fs: MountFs, nodeid: number, flags = 0) {
  const r = await fs.handle(req(Op.OPEN, nodeid, le([4, flags], [4, 0])));
  return r.error
    ? { error: r.error, fh: 0 }
    : { error: 0, fh: Number(payload(r).getBigUint64(0, true)) };
}

async function read(fs: MountFs, fh: number, offset: number, size: number): Promise<Reply> {
  const r = await fs.handle(
    req(Op.READ, 0, le([8, fh], [8, offset], [4, size], [4, 0], [8, 0], [4, 0], [4, 0])),
  );
  // As the server does: the parts written out (here: joined into one copy), then `done`.
  const out = new Uint8Array(r.parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of r.parts) {
    out.set(p, at);
    at += p.length;
  }
  r.done?.();
  return { error: r.error, parts: [out] };
}

async function readdir(fs: MountFs, nodeid: number): Promise<string[]> {
  const o = await fs.handle(req(Op.OPENDIR, nodeid, le([4, 0], [4, 0])));
  const fh = Number(payload(o).getBigUint64(0, true));
  const r = payload(
    await fs.handle(
      req(Op.READDIR, nodeid, le([8, fh], [8, 0], [4, 4096], [4, 0], [8, 0], [4, 0], [4, 0])),
    ),
  );
  const names: string[] = [];
  for (let at = 0; at < r.byteLength;) {
    const len = r.getUint32(at + 16, true);
    names.push(new TextDecoder().decode(new Uint8Array(r.buffer, r.byteOffset + at + 24, len)));
    at += (24 + len + 7) & ~7;
  }
  await fs.handle(req(Op.RELEASEDIR, nodeid, le([8, fh], [4, 0], [4, 0], [8, 0])));
  return names;
}

/** A chunked job with two revisions: blocks [1, 0, 2] then [1, 0, 3, 4] (last one short). */
async function twoRevisions(dir: string) {
  const src = join(dir, "src.img");
  const job = join(dir, "job");
  await writeImage(src, [1, 0, 2], 3 * BLOCK);
  await initJob(job, src, "chunked");
  expectOk(await backy(["-b", job, "backup", "daily"]));
  const v1 = await Deno.readFile(src);
  await writeImage(src, [1, 0, 3, 4], 3 * BLOCK + MiB + 123);
  expectOk(await backy(["-b", job, "backup", "daily,weekly"]));
  const v2 = await Deno.readFile(src);
  const [r1, r2] = await revisions(job);
  return { job, v1, v2, r1, r2 };
}

Deno.test("filesystem: names, attributes and reads of a chunked job equal the source", async () => {
  const dir = await tempDir();
  const { job, v1, v2, r1, r2 } = await twoRevisions(dir);
  const jd = await JobDir.open(job);
  const { fs, close } = mountFs({ job: new JobView(jd, await jd.lockRead(), logger("mount")) });
  try {
    const init = payload(
      await fs.handle(req(Op.INIT, 0, le([4, 7], [4, 45], [4, 131072], [4, 0x73fffffb], [4, 0]))),
    );
    assertEquals([init.getUint32(0, true), init.getUint32(4, true)], [7, 31]);
    assertEquals(init.getUint32(12, true), (1 << 0) | (1 << 5) | (1 << 18) | (1 << 22));
    assertEquals(init.getUint16(28, true), 256); // 1 MiB reads

    assertEquals(await readdir(fs, 1), [".", "..", r1.id, r2.id, "last", "daily", "weekly"]);
    const f1 = await lookup(fs, 1, r1.id);
    assertEquals([f1.size, f1.mode.toString(8)], [v1.length, "100400"]);
    assertEquals(f1.mtime, Math.floor(Date.parse(r1.timestamp.replace(" ", "T")) / 1000));
    const last = await lookup(fs, 1, "last");
    assertEquals(last.mode.toString(8), "120777");
    const link = payload(await fs.handle(req(Op.READLINK, last.nodeid)));
    assertEquals(
      new TextDecoder().decode(new Uint8Array(link.buffer, link.byteOffset, link.byteLength)),
      r2.id,
    );
    assertEquals((await lookup(fs, 1, "nothing")).error, Errno.ENOENT);

    const f2 = await lookup(fs, 1, r2.id);
    assertEquals(f2.size, v2.length);
    for (const [f, expected] of [[f1, v1], [f2, v2]] as const) {
      const { fh } = await open(fs, f.nodeid);
      // Reads at block edges, across blocks, in the hole, and past the end (short there only).
      for (
        const [off, len] of [
          [0, 4096],
          [BLOCK - 100, 200],
          [MiB, 3 * MiB], // more than the kernel asks for at once: still all of it
          [BLOCK + 5, MiB],
          [2 * BLOCK - 7, MiB],
          [expected.length - 10, 4096],
          [expected.length, 4096],
        ]
      ) {
        const r = await read(fs, fh, off, len);
        assertEquals(r.error, 0);
        assert(bytesEqual(r.parts[0], expected.subarray(off, off + len)), `bytes at ${off}+${len}`);
      }
      // Everything, sequentially in 1 MiB reads (read-ahead on).
      const all = new Uint8Array(expected.length);
      for (let off = 0; off < expected.length; off += MiB) {
        all.set((await read(fs, fh, off, MiB)).parts[0], off);
      }
      assert(bytesEqual(all, expected));
      await fs.handle(req(Op.RELEASE, f.nodeid, le([8, fh], [4, 0], [4, 0], [8, 0])));
    }

    // Many readers at once, random offsets in both revisions: every byte right.
    const fh1 = (await open(fs, f1.nodeid)).fh;
    const fh2 = (await open(fs, f2.nodeid)).fh;
    const jobs = Array.from({ length: 60 }, (_, k) => {
      const [fh, expected] = k % 2 ? [fh1, v1] : [fh2, v2];
      const off = (k * 2654435761) % expected.length;
      return read(fs, fh, off, 128 * 1024).then((r) => {
        assertEquals(r.error, 0);
        assert(bytesEqual(r.parts[0], expected.subarray(off, off + 128 * 1024)), `at ${off}`);
      });
    });
    await Promise.all(jobs);

    const { fh } = await open(fs, f2.nodeid);
    const seek = async (off: number, whence: number) => {
      const r = await fs.handle(
        req(Op.LSEEK, f2.nodeid, le([8, fh], [8, off], [4, whence], [4, 0])),
      );
      return r.error ? -r.error : Number(payload(r).getBigUint64(0, true));
    };
    assertEquals(await seek(0, SEEK_HOLE), BLOCK);
    assertEquals(await seek(BLOCK, SEEK_DATA), 2 * BLOCK);
    assertEquals(await seek(2 * BLOCK, SEEK_HOLE), v2.length);
    assertEquals(await seek(v2.length, SEEK_DATA), -Errno.ENXIO);
  } finally {
    close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("filesystem: read-only — opens for writing and every change answer EROFS; unknown ops ENOSYS", async () => {
  const dir = await tempDir();
  const { job, r1 } = await twoRevisions(dir);
  const jd = await JobDir.open(job);
  const { fs, close } = mountFs({ job: new JobView(jd, await jd.lockRead(), logger("mount")) });
  try {
    const f = await lookup(fs, 1, r1.id);
    assertEquals((await open(fs, f.nodeid, 0o1)).error, Errno.EROFS); // O_WRONLY
    assertEquals((await open(fs, f.nodeid, 0o2)).error, Errno.EROFS); // O_RDWR
    assertEquals((await open(fs, f.nodeid, 0o1000)).error, Errno.EROFS); // O_TRUNC
    for (
      const op of [
        Op.WRITE,
        Op.SETATTR,
        Op.CREATE,
        Op.MKDIR,
        Op.UNLINK,
        Op.RENAME,
        Op.SYMLINK,
        Op.SETXATTR,
        Op.FALLOCATE,
      ]
    ) {
      assertEquals(
        (await fs.handle(req(op, f.nodeid, new Uint8Array(64)))).error,
        Errno.EROFS,
        `op ${op}`,
      );
    }
    assertEquals(
      (await fs.handle(req(Op.ACCESS, f.nodeid, le([4, 2], [4, 0])))).error,
      Errno.EROFS,
    );
    assertEquals((await fs.handle(req(Op.ACCESS, f.nodeid, le([4, 4], [4, 0])))).error, 0);
    assertEquals((await fs.handle(req(99, 1))).error, Errno.ENOSYS);
    assertEquals((await fs.handle(req(Op.GETXATTR, 1, new Uint8Array(16)))).error, Errno.ENOSYS);
  } finally {
    close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("filesystem: a damaged chunk fails only reads touching its block, logged once", async () => {
  const dir = await tempDir();
  const logfile = join(dir, "mount.log");
  setupLogging({ verbose: false, logfile, console: "stderr" });
  const { job, v2, r2 } = await twoRevisions(dir);
  // Block 2 of the second revision is seed 3's data: damage its chunk.
  const h = createHash("sha256").update(randomBytes(BLOCK, 3)).digest("hex");
  const chunk = join(job, "chunks", h.slice(0, 2), h);
  await corrupt(chunk, 100, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  const jd = await JobDir.open(job);
  const { fs, close } = mountFs({ job: new JobView(jd, await jd.lockRead(), logger("mount")) });
  try {
    const f = await lookup(fs, 1, r2.id);
    const { fh } = await open(fs, f.nodeid);
    const ok = async (off: number, len: number) => {
      const r = await read(fs, fh, off, len);
      assertEquals(r.error, 0, `read at ${off}`);
      assert(bytesEqual(r.parts[0], v2.subarray(off, off + len)));
    };
    await ok(0, MiB);
    await ok(2 * BLOCK - MiB, MiB); // right up to the damaged block
    for (const off of [2 * BLOCK, 2 * BLOCK + 1000, 3 * BLOCK - 4096, 2 * BLOCK - 4096]) {
      assertEquals((await read(fs, fh, off, 8192)).error, Errno.EIO, `read at ${off}`);
    }
    await ok(3 * BLOCK, MiB); // right after it
    stopLogging();
    const log = await Deno.readTextFile(logfile);
    assertEquals(log.split("\n").filter((l) => l.includes("Damaged block")).length, 1, log);
    assertIncludes(
      log,
      `revision=${r2.id} offset=${2 * BLOCK} bytes=${2 * BLOCK}-${3 * BLOCK - 1}`,
    );
    assertIncludes(log, "hash mismatch");
  } finally {
    stopLogging();
    close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("filesystem: a base directory shows one folder per job; other directories are not shown", async () => {
  const dir = await tempDir();
  const base = join(dir, "base");
  await Deno.mkdir(base);
  const src = join(dir, "src.img");
  await writeImage(src, [5, 6]);
  for (const name of ["vm1", "vm2"]) {
    await initJob(join(base, name), src, "chunked");
    expectOk(await backy(["-b", join(base, name), "backup", "daily"]));
  }
  await Deno.mkdir(join(base, "not-a-job"));
  const { fs, close } = mountFs({ base: new BaseView(base, logger("mount")) });
  try {
    assertEquals((await readdir(fs, 1)).sort(), [".", "..", "vm1", "vm2"]);
    const vm2 = await lookup(fs, 1, "vm2");
    assertEquals(vm2.mode.toString(8), "40500");
    const [r] = await revisions(join(base, "vm2"));
    assertEquals(await readdir(fs, vm2.nodeid), [".", "..", r.id, "last", "daily"]);
    const f = await lookup(fs, vm2.nodeid, r.id);
    const { fh } = await open(fs, f.nodeid);
    const got = await read(fs, fh, BLOCK - 10, 20);
    assert(bytesEqual(got.parts[0], (await Deno.readFile(src)).subarray(BLOCK - 10, BLOCK + 10)));
    assertEquals((await lookup(fs, 1, "not-a-job")).error, Errno.ENOENT);
  } finally {
    close();
    await Deno.remove(dir, { recursive: true });
  }
});
