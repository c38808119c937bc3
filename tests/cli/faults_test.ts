/**
 * Black-box: things going wrong under a running backup or in the stored data (issue 2):
 * SIGKILL mid-backup, corrupted chunks and cow images, failed verification.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backedUpJob,
  backy,
  BLOCK,
  bytesEqual,
  chunkOf,
  corrupt,
  expectOk,
  fileExists,
  filesEqual,
  initJob,
  isRoot,
  listDir,
  MiB,
  randomBytes,
  revisions,
  sh,
  spawnBacky,
  tempDir,
  writeImage,
} from "../helpers.ts";

/** Path of the chunk that stores `data` (design D3: chunks/<2 hex>/<64 hex>). */
/** `verify: full` in the job's config: backups read back every block, not only new ones. */
async function verifyFull(job: string) {
  const cfg = join(job, "config");
  await Deno.writeTextFile(cfg, (await Deno.readTextFile(cfg)) + "verify: full\n");
}

async function sparseCopy(from: string, to: string) {
  const r = await sh("cp", ["--sparse=always", from, to]);
  assertEquals(r.code, 0, r.err);
}

/** Status row of a revision, split into its cells. */
function statusRow(status: string, id: string): string[] {
  const line = status.split("\n").find((l) => l.includes(` ${id} `));
  assert(line, `status lists ${id}:\n${status}`);
  return line.split("|").slice(1, -1).map((c) => c.trim());
}

for (const backend of ["chunked", "cow"] as const) {
  Deno.test(`${backend}: SIGKILL mid-backup, then status, restores and the next backup`, async () => {
    const dir = await tempDir();
    try {
      const src = join(dir, "src.img");
      const job = join(dir, "job");
      const SIZE = 256 * MiB; // 64 blocks, sparse
      const blocks = new Array(64).fill(0);
      blocks[0] = 1;
      blocks[10] = 2;
      blocks[63] = 3;
      await writeImage(src, blocks, SIZE);
      await initJob(job, src, backend);
      expectOk(await backy(["-b", job, "backup", "daily"]));
      await sparseCopy(src, join(dir, "v1.img"));
      await writeImage(src, blocks.map((s, i) => (i === 10 ? 4 : s)), SIZE);
      expectOk(await backy(["-b", job, "backup", "daily"]));
      await sparseCopy(src, join(dir, "v2.img"));
      const [A, B] = await revisions(job);

      // 40 new distinct 4 MiB blocks (160 MiB): enough work to be caught in the middle.
      const f = await Deno.open(src, { write: true });
      const base = randomBytes(BLOCK, 5);
      for (let i = 20; i < 60; i++) {
        base.set(new TextEncoder().encode(`block ${i} `.padEnd(16)), 0);
        await f.seek(i * BLOCK, Deno.SeekMode.Start);
        let off = 0;
        while (off < BLOCK) off += await f.write(base.subarray(off));
      }
      f.close();

      const child = spawnBacky(["-b", job, "backup", "daily"]);
      let victim: string | undefined;
      for (let i = 0; i < 2000 && !victim; i++) {
        victim = (await listDir(job)).find((n) =>
          n.endsWith(".rev") && n !== "last.rev" && !n.startsWith(A.id) && !n.startsWith(B.id)
        );
        if (!victim) await new Promise((r) => setTimeout(r, 5));
      }
      assert(victim, "the backup created its .rev");
      child.kill("SIGKILL");
      const st = await child.output();
      assertEquals(st.signal, "SIGKILL");
      const C = (await revisions(job)).find((r) => `${r.id}.rev` === victim)!;
      assertEquals(C.duration, undefined, "killed before it completed");
      assertEquals(C.parent, B.id);

      // status shows it with 0 s; the others keep their durations.
      const s = expectOk(await backy(["-b", job, "status"]));
      assertEquals(statusRow(s.stdout, C.id)[3], "0 s");
      assertMatch(statusRow(s.stdout, B.id)[3], /^\d+\.\d s$/);
      assertMatch(s.stdout, /\n3 revisions containing/);

      // It cannot be restored; last and every older revision restore identically.
      const r0 = await backy(["-b", job, "restore", "-r", "0", join(dir, "x")]);
      assertEquals(r0.code, 1);
      assertIncludes(r0.stderr, `Error: revision ${C.id} is incomplete`);
      assertEquals(await fileExists(join(dir, "x")), false);
      for (const [spec, v] of [["last", 2], ["2", 1]] as const) {
        const out = join(dir, `out-${spec}`);
        expectOk(await backy(["-b", job, "restore", "-r", spec, out]));
        assert(await filesEqual(out, join(dir, `v${v}.img`)), `-r ${spec}`);
        await Deno.remove(out);
      }
      if (backend === "cow") {
        assertEquals(await Deno.readLink(join(job, "last")), B.id);
      }

      // The next backup removes exactly the killed revision's files and works.
      const next = expectOk(await backy(["-b", job, "backup", "daily"]));
      assertIncludes(next.stdout, `Removing incomplete revision id=${C.id}`);
      const left = (await listDir(job)).filter((n) => n.includes(C.id));
      assertEquals(left, [], "no file of the killed revision is left");
      const revs = await revisions(job);
      assertEquals(revs.length, 3);
      assertEquals(revs[2].parent, B.id);
      assertEquals(typeof revs[2].duration, "number");
      const out = join(dir, "out-new");
      expectOk(await backy(["-b", job, "restore", out]));
      assert(await filesEqual(out, src));
      await Deno.remove(out);
      const outA = join(dir, "out-A");
      expectOk(await backy(["-b", job, "restore", "-r", A.id, outA]));
      assert(await filesEqual(outA, join(dir, "v1.img")));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("chunked: a corrupted chunk is named on restore and no wrong bytes land", async () => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [91, 92, 0, 93], "chunked");
    await writeImage(src, [91, 94, 0, 93]);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const v2 = join(dir, "v2.img");
    await Deno.copyFile(src, v2);
    const [A, B] = await revisions(job);

    // Block 1 of B (seed 94) is stored only for B.
    const chunk = chunkOf(job, randomBytes(BLOCK, 94));
    assert(await fileExists(chunk), chunk);
    const size = (await Deno.stat(chunk)).size;
    await corrupt(chunk, Math.floor(size / 2), new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));

    // To a new file: error names the chunk, no target, no temp file.
    const target = join(dir, "restored.img");
    const r = await backy(["-b", job, "restore", "-r", B.id, target]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, new RegExp(`^Error: .*chunk ${chunk} is corrupt`));
    assertEquals(await fileExists(target), false);
    assertEquals((await listDir(dir)).filter((n) => n.includes("restored")), []);

    // Over an existing file with -f: the file stays as it was.
    await Deno.writeTextFile(target, "keep me\n");
    const rf = await backy(["-b", job, "restore", "-f", "-r", B.id, target]);
    assertEquals(rf.code, 1);
    assertIncludes(rf.stderr, chunk);
    assertEquals(await Deno.readTextFile(target), "keep me\n");

    // To stdout: exit 1, and what did come out is a correct prefix (block 0 at most).
    const rs = await backy(["-b", job, "restore", "-r", B.id, "-"]);
    assertEquals(rs.code, 1);
    assertIncludes(rs.stderr, chunk);
    const want = await Deno.readFile(v2);
    assert(rs.stdoutBytes.length <= BLOCK, `${rs.stdoutBytes.length} bytes written`);
    assert(bytesEqual(rs.stdoutBytes, want.subarray(0, rs.stdoutBytes.length)));

    // A, which does not use that chunk, still restores identically.
    const outA = join(dir, "a.img");
    expectOk(await backy(["-b", job, "restore", "-r", A.id, outA]));
    assert(await filesEqual(outA, v1));

    // A missing chunk is named too.
    await Deno.remove(chunk);
    const rm = await backy(["-b", job, "restore", "-r", B.id, join(dir, "m.img")]);
    assertEquals(rm.code, 1);
    assertIncludes(rm.stderr, `chunk ${chunk} is unreadable: missing`);
    assertEquals(await fileExists(join(dir, "m.img")), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cow: a corrupted image block is detected on restore through the index", async () => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [95, 0, 96], "cow");
    await writeImage(src, [95, 0, 97]);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const [A, B] = await revisions(job);

    await corrupt(join(job, B.id), 2 * BLOCK + 100, new TextEncoder().encode("bit rot"));
    const target = join(dir, "b.img");
    const r = await backy(["-b", job, "restore", "-r", B.id, target]);
    assertEquals(r.code, 1);
    assertIncludes(
      r.stderr,
      `image ${join(job, B.id)} is corrupt at offset ${2 * BLOCK}: block does not match its index`,
    );
    assertEquals(await fileExists(target), false);
    const rs = await backy(["-b", job, "restore", "-r", B.id, "-"]);
    assertEquals(rs.code, 1);
    assert(rs.stdoutBytes.length <= 2 * BLOCK, "nothing from the corrupt block on stdout");

    // Junk inside a hole of A's image is not restored: the index says the block is zero.
    await corrupt(join(job, A.id), BLOCK + 5, new TextEncoder().encode("junk"));
    const outA = join(dir, "a.img");
    expectOk(await backy(["-b", job, "restore", "-r", A.id, outA]));
    assert(await filesEqual(outA, v1));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cow: damage in the clone is healed from the source; a rotten parent is distrusted", async (t) => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [101, 102, 0], "cow");
    const [A] = await revisions(job);
    await verifyFull(job); // every block read back, inherited ones too (design D16's option)

    await t.step(
      "a block damaged in the clone: stored again, the parent stays trusted",
      async () => {
        // A cp that clones, then damages block 0 of the clone (which the next backup keeps).
        const cp = join(dir, "bad-cp");
        await Deno.writeTextFile(
          cp,
          `#!/bin/sh
cp "$@" || exit $?
for last; do :; done
chmod u+w "$last"
printf 'DAMAGED' | dd of="$last" bs=1 seek=1000 conv=notrunc 2>/dev/null
`,
        );
        await Deno.chmod(cp, 0o755);
        await writeImage(src, [101, 103, 0]);
        const r = expectOk(await backy(["-b", job, "backup", "daily"], { env: { BACKY_CP: cp } }));
        assertIncludes(
          r.stdout,
          "Blocks do not match the source after copying; storing them again",
        );
        assertIncludes(r.stdout, "Healed from the source");
        const [a, B] = await revisions(job);
        assertEquals([a.trust, B.trust], ["trusted", "trusted"], "A's own copy is fine");
        assertEquals(await Deno.readLink(join(job, "last")), B.id);
        const out = join(dir, "b.img");
        expectOk(await backy(["-b", job, "restore", out]));
        assert(await filesEqual(out, src));
        expectOk(await backy(["-b", job, "restore", "-r", A.id, join(dir, "a.img")]));
        assert(await filesEqual(join(dir, "a.img"), v1));
      },
    );

    await t.step(
      "the newest image rots: the next backup heals, and never clones it again",
      async () => {
        const [, B] = await revisions(job);
        await corrupt(join(job, B.id), 2000, new TextEncoder().encode("ROT"));
        const r = expectOk(await backy(["-b", job, "backup", "daily"]));
        assertIncludes(r.stdout, "The parent revision is damaged; it will not be built on again");
        let revs = await revisions(job);
        const [, b, C] = revs;
        assertEquals(b.trust, "distrusted");
        assertEquals(
          (b.raw.damage as string[])[0].replace(/stored \w+…, source \w+…/, "X"),
          "block 0 (offset 0): X",
        );
        assertEquals([C.parent, C.trust], [B.id, "trusted"]);
        // B cannot be restored (no wrong byte written); C can, and the next backup builds on C.
        const bad = await backy(["-b", job, "restore", "-r", B.id, join(dir, "b2.img")]);
        assertEquals(bad.code, 1);
        assertIncludes(bad.stderr, "is corrupt at offset 0");
        assertEquals(await fileExists(join(dir, "b2.img")), false);
        expectOk(await backy(["-b", job, "restore", "-r", C.id, join(dir, "c.img")]));
        assert(await filesEqual(join(dir, "c.img"), src));
        expectOk(await backy(["-b", job, "backup", "daily"]));
        revs = await revisions(job);
        assertEquals(revs.at(-1)!.parent, C.id, "the distrusted revision is never a parent");
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chunked: a rotten chunk is moved aside and stored anew in the same run", async (t) => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [111, 0, 112], "chunked");
    const [A] = await revisions(job);
    await verifyFull(job); // every block read back, inherited ones too (design D16's option)

    await t.step("a new block deduplicated against a rotten chunk", async () => {
      // The chunk for the next source block already exists, but rotten: the backup
      // deduplicates against it and only verification can notice.
      const chunk = chunkOf(job, randomBytes(BLOCK, 113));
      await Deno.mkdir(join(chunk, ".."), { recursive: true });
      await Deno.writeFile(chunk, randomBytes(5000, 7), { mode: 0o440 });
      await writeImage(src, [111, 113, 112]);
      const r = expectOk(await backy(["-b", job, "backup", "daily"]));
      assertIncludes(r.stdout, "Healed from the source");
      const [, B] = await revisions(job);
      assertEquals([B.trust, B.parent], ["trusted", A.id]);
      assert(await fileExists(`${chunk}.corrupt`), "evidence kept");
      assert(await fileExists(chunk), "stored anew");
      const out = join(dir, "new.img");
      expectOk(await backy(["-b", job, "restore", out]));
      assert(await filesEqual(out, src));
    });

    await t.step("an unchanged block whose chunk rots: healed for every revision", async () => {
      // Block 0 (seed 111) is in every revision so far; rot it.
      const chunk = chunkOf(job, randomBytes(BLOCK, 111));
      await corrupt(chunk, 100, new Uint8Array(16).fill(0xee));
      const old = join(dir, "old.img");
      const r = await backy(["-b", job, "restore", "-r", A.id, old]);
      assertEquals(r.code, 1);
      assertIncludes(r.stderr, `chunk ${chunk} is corrupt`);

      const healed = expectOk(await backy(["-b", job, "backup", "daily"]));
      assertIncludes(healed.stdout, "Healed from the source");
      // The fresh chunk serves the old revisions too.
      expectOk(await backy(["-b", job, "restore", "-r", A.id, old]));
      assert(await filesEqual(old, v1));
      const out = join(dir, "now.img");
      expectOk(await backy(["-b", job, "restore", out]));
      assert(await filesEqual(out, src));
    });

    await t.step({
      name: `a rotten chunk that cannot be replaced fails the backup, which is never a parent${
        isRoot() ? "" : " (ignored: chattr +i needs root)"
      }`,
      ignore: !isRoot(),
      fn: async () => {
        const before = await revisions(job);
        const good = before.at(-1)!;
        const chunk = chunkOf(job, randomBytes(BLOCK, 112));
        await corrupt(chunk, 100, new Uint8Array(16).fill(0xee));
        assertEquals((await sh("chattr", ["+i", chunk])).code, 0);
        try {
          const bad = await backy(["-b", job, "backup", "daily"]);
          assertEquals(bad.code, 1, bad.stdout);
          const B = (await revisions(job)).at(-1)!;
          assertMatch(
            bad.stderr,
            new RegExp(
              `^Error: verification of revision ${B.id} failed: 1 of 3 blocks differ from ` +
                `the source; first: block 2 \\(offset ${2 * BLOCK}\\): chunk ${chunk} is ` +
                "corrupt: .*\n$",
            ),
          );
          assertEquals([B.trust, B.duration], ["distrusted", undefined]);
          assertIncludes(B.error ?? "", "verification");
          const s = expectOk(await backy(["-b", job, "status"]));
          assertEquals(statusRow(s.stdout, B.id)[3], "0 s");
        } finally {
          await sh("chattr", ["-i", chunk]);
        }
        // Replaceable again: the next backup removes the failed one and heals the chunk.
        const next = expectOk(await backy(["-b", job, "backup", "daily"]));
        assertIncludes(next.stdout, "Removing incomplete revision");
        const revs = await revisions(job);
        assertEquals(revs.at(-1)!.parent, good.id, "the failed revision is never a parent");
        const out = join(dir, "after.img");
        expectOk(await backy(["-b", job, "restore", out]));
        assert(await filesEqual(out, src));
      },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
