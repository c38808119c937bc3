/**
 * Black-box: backups in both backends with changes, growth and shrinking in between; the
 * status table, `find`, every kind of revision spec, holes, the cow `last` link.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import { formatBytes } from "../../src/util/format.ts";
import {
  assertIncludes,
  backy,
  BLOCK,
  bytesEqual,
  duKiB,
  expectOk,
  fileExists,
  filesEqual,
  initJob,
  listDir,
  patchFile,
  revisions,
  sh,
  sizeOf,
  tempDir,
  writeImage,
} from "../helpers.ts";

/** Whether `dir`'s filesystem can reflink (then cow makes no "full copy" warning). */
async function canReflink(dir: string): Promise<boolean> {
  const a = join(dir, ".probe-a");
  await Deno.writeFile(a, new Uint8Array(4096).fill(7));
  const r = await sh("cp", ["--reflink=always", a, `${a}.b`]);
  await Deno.remove(a);
  if (r.code === 0) await Deno.remove(`${a}.b`);
  return r.code === 0;
}

/** A prefix of `id` that no other id shares and that is not a number, tag or keyword. */
function uniquePrefix(id: string, ids: string[]): string {
  for (let n = 3; n < id.length; n++) {
    const p = id.slice(0, n);
    if (/^\d+$/.test(p)) continue;
    if (ids.filter((o) => o.startsWith(p)).length === 1) return p;
  }
  throw new Error(`no unique prefix for ${id}`);
}

const probeDir = await tempDir();
const canReflinkHere = await canReflink(probeDir);
await Deno.remove(probeDir, { recursive: true });

const V1_SIZE = 4 * BLOCK + 1_000_003; // data, hole, data, hole, short data block
const V2_SIZE = 7 * BLOCK + 17; // grown: block 2 patched, 4 now full length, 5 hole, 6 data
const V3_SIZE = 2 * BLOCK + 77; // shrunk: block 1 gets data, block 2 cut to 77 bytes

for (const backend of ["chunked", "cow"] as const) {
  Deno.test(`${backend}: four revisions with changes, growth and shrinking`, async (t) => {
    const dir = await tempDir();
    try {
      const src = join(dir, "src.img");
      const job = join(dir, "job");
      const v = (n: number) => join(dir, `v${n}.img`);

      await writeImage(src, [1, 0, 2, 0, 3], V1_SIZE);
      await initJob(job, src, backend);
      const b1 = expectOk(await backy(["-b", job, "backup", "daily"]));
      assertIncludes(b1.stdout, "Backup complete");
      await Deno.copyFile(src, v(1));

      await patchFile(src, 2 * BLOCK + 1000, 5000, 9);
      await Deno.truncate(src, V2_SIZE);
      await patchFile(src, 6 * BLOCK, BLOCK, 4);
      const b2 = expectOk(await backy(["-b", job, "backup", " daily , weekly "]));
      await Deno.copyFile(src, v(2));

      await Deno.truncate(src, V3_SIZE);
      await patchFile(src, BLOCK + 4096, 8192, 5);
      expectOk(await backy(["-b", job, "backup", "hourly"]));
      await Deno.copyFile(src, v(3));
      expectOk(await backy(["-b", job, "backup", "daily"])); // unchanged source

      const revs = await revisions(job);
      const [A, B, C, D] = revs;
      const ids = revs.map((r) => r.id);

      await t.step("revision metadata: chained parents, tags, change detection", () => {
        assertEquals(revs.length, 4);
        for (const r of revs) {
          assertEquals(typeof r.duration, "number", `${r.id} complete`);
          assertEquals(r.raw.backend, backend);
          assertMatch(r.id, /^[2-9A-HJ-NP-Za-km-z]{22}$/);
          assertMatch(r.timestamp, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00$/);
        }
        assertEquals(revs.map((r) => r.parent), [null, A.id, B.id, C.id]);
        assertEquals(revs.map((r) => r.tags), [["daily"], ["daily", "weekly"], ["hourly"], [
          "daily",
        ]]);
        // Holes are never written; a rerun on an unchanged source writes nothing.
        assertEquals(A.bytesWritten, 2 * BLOCK + 1_000_003);
        assertEquals(D.bytesWritten, 0);
        assert(B.bytesWritten > 0 && C.bytesWritten > 0);
        if (backend === "cow") {
          const warned = b2.stdout.includes("REFLINK NOT SUPPORTED");
          assertEquals(warned, !canReflinkHere, b2.stdout);
        }
      });

      await t.step("completed revisions are read-only", async () => {
        for (const r of revs) {
          assertEquals((await Deno.stat(join(job, `${r.id}.rev`))).mode! & 0o777, 0o440);
          assertEquals((await Deno.stat(join(job, `${r.id}.index`))).mode! & 0o777, 0o440);
          if (backend === "cow") {
            assertEquals(
              (await Deno.stat(join(job, r.id))).mode! & 0o777,
              0o440,
              `image ${r.id} read-only`,
            );
          }
        }
      });

      await t.step("status table and closing line", async () => {
        const r = expectOk(await backy(["-b", job, "status"]));
        assertEquals(r.stderr, "");
        const lines = r.stdout.split("\n");
        assertEquals(lines.pop(), "");
        assertEquals(lines.length, 9, r.stdout);
        const border = lines[0];
        assertMatch(border, /^\+-{21}\+-{24}\+-+\+-+\+-+\+$/);
        assertEquals(lines[2], border);
        assertEquals(lines[7], border);
        for (const l of lines.slice(0, 8)) assertEquals(l.length, border.length, l);
        assertMatch(lines[1], /^\| Date \(UTC\) {10}\| ID {21}\| +Size \| +Durat \| Tags +\|$/);
        revs.forEach((rev, i) => {
          const cells = lines[3 + i].split("|").slice(1, -1);
          assertEquals(cells.length, 5);
          assertEquals(cells[0], ` ${rev.timestamp.slice(0, 19)} `);
          assertEquals(cells[1], ` ${rev.id} `);
          assertMatch(cells[2], new RegExp(`^ +${formatBytes(rev.bytesWritten)} $`));
          assertMatch(cells[3], /^ +\d+\.\d s $/);
          assertEquals(cells[4].trim(), rev.tags.join(","));
          assert(cells[4].startsWith(` ${rev.tags.join(",")}`), "tags left-aligned");
        });
        assertEquals(lines[6].split("|")[3].trim(), "0 Bytes");
        const total = revs.reduce((s, x) => s + x.bytesWritten, 0);
        assertEquals(lines[8], `4 revisions containing ${formatBytes(total)} data (estimated)`);
      });

      // Spec resolution is unit-tested (tests/repo/spec_test.ts); here every kind of spec
      // goes through the real command once per backend, restoring byte-identical data.
      const toFile: [string[], number][] = [
        [[], 3],
        [["-r", "2"], 2],
        [["-r", "3"], 1],
        [["-r", A.id], 1],
        [["-r", "weekly"], 2],
        [["-r", "last"], 3],
        [["--revision", uniquePrefix(B.id, ids)], 2],
      ];
      const toStdout: [string[], number][] = [
        [[], 3],
        [["-r", uniquePrefix(A.id, ids)], 1],
        [["-r", "weekly"], 2],
      ];

      await t.step("restore every kind of spec to a file, byte-identical", async () => {
        await Promise.all(toFile.map(async ([spec, n], k) => {
          const out = join(dir, `out-${k}`);
          const r = expectOk(await backy(["-b", job, "restore", ...spec, out]));
          assertIncludes(r.stdout, "Restore complete");
          assert(await filesEqual(out, v(n)), `restore ${spec.join(" ")} = v${n}`);
          await Deno.remove(out);
        }));
        assertEquals((await listDir(dir)).filter((n) => n.includes("backy-restore")), []);
      });

      await t.step("restore to - streams exactly the image on stdout", async () => {
        await Promise.all(toStdout.map(async ([spec, n]) => {
          const r = await backy(["-b", job, "restore", ...spec, "-"]);
          assertEquals(r.code, 0, r.stderr);
          const want = await Deno.readFile(v(n));
          assertEquals(r.stdoutBytes.length, want.length, `restore ${spec.join(" ")} -`);
          assert(bytesEqual(r.stdoutBytes, want), `restore ${spec.join(" ")} -`);
        }));
      });

      await t.step("zero blocks stay holes in restored files", async () => {
        const out = join(dir, "holes1");
        expectOk(await backy(["-b", job, "restore", "-r", A.id, out]));
        assertEquals(await sizeOf(out), V1_SIZE);
        // 2 data blocks + the short one; the two 4 MiB holes must not be allocated.
        const dataKiB = (2 * BLOCK + 1_000_003) / 1024;
        assert(await duKiB(out) < dataKiB + 1024, `du ${await duKiB(out)} KiB`);
        const out2 = join(dir, "holes2");
        expectOk(await backy(["-b", job, "restore", "-r", B.id, out2]));
        assertEquals(await sizeOf(out2), V2_SIZE);
        assert(await duKiB(out2) < (4 * BLOCK) / 1024 + 1024, `du ${await duKiB(out2)} KiB`);
      });

      if (backend === "cow") {
        await t.step("cow: find prints one absolute path; images are sparse", async () => {
          const real = await Deno.realPath(job);
          const f = expectOk(await backy(["-b", job, "find"]));
          assertEquals(f.stdout, `${real}/${D.id}\n`);
          assertEquals(f.stderr, "");
          const f2 = expectOk(await backy(["-b", job, "find", "-r", "weekly"]));
          assertEquals(f2.stdout, `${real}/${B.id}\n`);
          const f3 = expectOk(await backy(["find", "-r", "3"], { cwd: job }));
          assertEquals(f3.stdout, `${real}/${A.id}\n`);
          assert(await filesEqual(f2.stdout.trim(), v(2)));
          assert(await duKiB(join(job, A.id)) < (V1_SIZE - 2 * BLOCK) / 1024 + 1024);
          assert(await duKiB(join(job, B.id)) < (V2_SIZE - 3 * BLOCK) / 1024 + 1024);
        });

        await t.step("cow: dd if=last reads the newest revision", async () => {
          assertEquals(await Deno.readLink(join(job, "last")), D.id);
          assertEquals(await Deno.readLink(join(job, "last.rev")), `${D.id}.rev`);
          const out = join(dir, "dd.img");
          const r = await sh("dd", [`if=${join(job, "last")}`, `of=${out}`, "bs=4M"]);
          assertEquals(r.code, 0, r.err);
          assert(await filesEqual(out, v(3)));
        });
      } else {
        await t.step("chunked: find is an error pointing to mount and restore -", async () => {
          const r = await backy(["-b", job, "find", "-r", B.id]);
          assertEquals(r.code, 1);
          assertEquals(r.stdout, "");
          assertEquals(
            r.stderr,
            `Error: revision ${B.id} is stored in the chunked backend and has no image file; ` +
              `mount the job ('backy -b ${job} mount MOUNTPOINT') to get one, or use ` +
              `'backy restore -r ${B.id} -' to stream it\n`,
          );
          assertEquals(await fileExists(join(job, "last")), false);
          assertEquals(await Deno.readLink(join(job, "last.rev")), `${D.id}.rev`);
          // Deduplication: D (unchanged) stored nothing new.
          assertEquals(D.raw.stats && (D.raw.stats as Record<string, unknown>).bytes_stored, 0);
        });
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("an empty source and an all-zero source back up and restore", async () => {
  const dir = await tempDir();
  try {
    for (const backend of ["chunked", "cow"] as const) {
      const src = join(dir, `${backend}.img`);
      const job = join(dir, `job-${backend}`);
      await Deno.writeFile(src, new Uint8Array());
      await initJob(job, src, backend);
      expectOk(await backy(["-b", job, "backup", "t"]));
      await Deno.truncate(src, 3 * BLOCK + 5);
      expectOk(await backy(["-b", job, "backup", "t"]));
      const [e, z] = await revisions(job);
      assertEquals([e.bytesWritten, z.bytesWritten], [0, 0]);
      const out = join(dir, `${backend}-empty`);
      expectOk(await backy(["-b", job, "restore", "-r", e.id, out]));
      assertEquals(await sizeOf(out), 0);
      const out2 = join(dir, `${backend}-zero`);
      expectOk(await backy(["-b", job, "restore", "-r", z.id, out2]));
      assertEquals(await sizeOf(out2), 3 * BLOCK + 5);
      assert(await filesEqual(out2, src));
      assert(await duKiB(out2) < 64, "all-zero restore is sparse");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backup needs a tag", async () => {
  const dir = await tempDir();
  try {
    await writeImage(join(dir, "s"), [1]);
    await initJob(join(dir, "job"), join(dir, "s"), "chunked");
    const r = await backy(["-b", join(dir, "job"), "backup", " , "]);
    assertEquals(r.code, 2, "a usage error");
    assertEquals(r.stderr, "Error: backup needs at least one tag\n");
    assertEquals(await revisions(join(dir, "job")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a relative source is relative to the job directory; -l logs to a file", async () => {
  const dir = await tempDir();
  try {
    const job = join(dir, "job");
    await initJob(job, "disk.img", "chunked");
    await writeImage(join(job, "disk.img"), [3, 0, 4]);
    const log = join(dir, "backy.log");
    const r = expectOk(await backy(["-l", log, "backup", "daily"], { cwd: job }));
    assertEquals(r.stdout, "", "with -l nothing goes to stdout");
    const text = await Deno.readTextFile(log);
    const lines = text.trimEnd().split("\n");
    assertMatch(
      lines[0],
      /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[\d+\] INFO \$ backy -l .* backup daily$/,
    );
    assertMatch(lines.at(-1)!, /\] INFO Backy operation complete\.$/);
    assertIncludes(text, "Backup complete");
    const out = join(dir, "out");
    expectOk(await backy(["-b", job, "restore", out]));
    assert(await filesEqual(out, join(job, "disk.img")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backup, restore and verify report progress without a terminal", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "src.img");
    await writeImage(src, Array.from({ length: 24 }, (_, i) => i + 1));
    const job = join(dir, "job");
    await initJob(job, src, "chunked");
    const env = { BACKY_PROGRESS_INTERVAL: "0.05" };
    const lines = (text: string) => text.split("\n").filter((l) => l.includes("Progress: "));
    const b = expectOk(await backy(["-b", job, "backup", "daily"], { env }));
    const bl = lines(b.stdout);
    assert(bl.some((l) => /Progress: backup copying +\d+\.\d% .* of 96\.00 MiB/.test(l)), b.stdout);
    assert(!(await fileExists(join(job, ".progress"))), ".progress removed at the end");
    const out = join(dir, "out.img");
    const r = expectOk(await backy(["-b", job, "restore", out], { env }));
    assert(lines(r.stdout).some((l) => /Progress: restore restoring +\d+\.\d% /.test(l)), r.stdout);
    const v = expectOk(await backy(["-b", job, "verify"], { env }));
    assert(lines(v.stderr).some((l) => /Progress: verify verifying +\d+\.\d% /.test(l)), v.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
