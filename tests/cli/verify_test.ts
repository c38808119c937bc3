/**
 * `backy verify` and the integrity rules around it (issue 9), by damaging real files: chunks,
 * cow images, index files and their mirrors, `.rev` files; a killed verify.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backedUpJob,
  backy,
  BLOCK,
  chunkOf,
  corrupt,
  expectOk,
  fileExists,
  filesEqual,
  randomBytes,
  revisions,
  spawnBacky,
  tempDir,
  writeImage,
} from "../helpers.ts";

/** Three chunked revisions: block 0 shared by all, block 2 by the first two. */
async function history(dir: string, backend: "chunked" | "cow" = "chunked") {
  const { src, job } = await backedUpJob(dir, [51, 52, 53], backend);
  await writeImage(src, [51, 54, 53]);
  expectOk(await backy(["-b", job, "backup", "daily"]));
  await writeImage(src, [51, 55, 56]);
  expectOk(await backy(["-b", job, "backup", "daily"]));
  return { src, job, revs: await revisions(job) };
}

Deno.test("verify --all: every revision checked, shared chunks read once, verified_at recorded", async () => {
  const dir = await tempDir();
  try {
    const { job, revs } = await history(dir);
    const r = expectOk(await backy(["-b", job, "verify", "--all"]));
    const lines = r.stdout.trimEnd().split("\n");
    // 9 blocks in all; 6 distinct chunks (51 three times, 53 twice).
    assertEquals(lines.map((l) => l.replace(/ \(.*\)$/, "")), revs.map((v) => `${v.id} OK`));
    const counts = lines.map((l) => Number(/\((\d+) blocks/.exec(l)![1]));
    assertEquals(counts, [3, 1, 2]);
    for (const v of await revisions(job)) {
      assertEquals(v.trust, "verified");
      assert(typeof v.raw.verified_at === "string", `${v.id} verified_at`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a rotten shared chunk: every revision using it is named and distrusted; a backup heals them all", async () => {
  const dir = await tempDir();
  try {
    const { job, revs } = await history(dir);
    const chunk = chunkOf(job, randomBytes(BLOCK, 51));
    await corrupt(chunk, 4000, new Uint8Array([1, 2, 3]));
    const bad = await backy(["-b", job, "verify", "--all"]);
    assertEquals(bad.code, 1);
    for (const v of revs) {
      assertIncludes(bad.stdout, `${v.id} DAMAGED: 1 block(s); block 0 (offset 0): chunk ${chunk}`);
    }
    assertEquals(bad.stderr.trimEnd().split("\n").at(-1), `Error: 3 damaged revision(s) in ${job}`);
    assert(await fileExists(`${chunk}.corrupt`), "moved aside");
    for (const v of await revisions(job)) {
      assertEquals(v.trust, "distrusted");
      assertIncludes((v.raw.damage as string[])[0], "block 0 (offset 0)");
    }
    // No revision to build on: the next backup is a full one, and stores the chunk anew.
    const next = expectOk(await backy(["-b", job, "backup", "daily"]));
    assertIncludes(next.stdout, "parent=-");
    const again = expectOk(await backy(["-b", job, "verify", "--all"]));
    assertEquals(again.stdout.split("\n").filter((l) => / OK \(/.test(l)).length, 4);
    assert((await revisions(job)).every((v) => v.trust === "verified"), "trusted again");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cow: a rotten image block is found by verify; the revision is never cloned again", async () => {
  const dir = await tempDir();
  try {
    const { src, job, revs } = await history(dir, "cow");
    const newest = revs.at(-1)!;
    await corrupt(join(job, newest.id), BLOCK + 10, new Uint8Array([9, 9, 9]));
    const bad = await backy(["-b", job, "verify"]);
    assertEquals(bad.code, 1);
    assertIncludes(bad.stdout, `${newest.id} DAMAGED: 1 block(s); block 1 (offset ${BLOCK})`);
    assertEquals((await revisions(job)).at(-1)!.trust, "distrusted");
    const next = expectOk(await backy(["-b", job, "backup", "daily"]));
    assertIncludes(next.stdout, `parent=${revs[1].id}`);
    const out = join(dir, "out.img");
    expectOk(await backy(["-b", job, "restore", out]));
    assert(await filesEqual(out, src));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("index files: a damaged copy heals from its mirror; both damaged means a full backup and a held-back GC only for what is unknown", async () => {
  const dir = await tempDir();
  try {
    const { job, revs } = await history(dir);
    const [A, , C] = revs;
    // One copy damaged: read from the other, rewritten.
    const index = join(job, `${C.id}.index`);
    const good = await Deno.readFile(index);
    await corrupt(index, 60, new Uint8Array([0xff]));
    const r = expectOk(await backy(["-b", job, "verify"]));
    assertIncludes(r.stderr, "Index file damaged or missing; restored from its mirror");
    assertEquals(await Deno.readFile(index), good);
    await Deno.remove(join(job, `${C.id}.index.mirror`));
    expectOk(await backy(["-b", job, "restore", join(dir, "c.img")]));
    assert(await fileExists(join(job, `${C.id}.index.mirror`)), "mirror written again");

    // Both copies of the newest index damaged: the next backup is a full one, not a failure.
    await corrupt(index, 60, new Uint8Array([0xff]));
    await corrupt(join(job, `${C.id}.index.mirror`), 70, new Uint8Array([0xff]));
    const next = expectOk(await backy(["-b", job, "backup", "daily"]));
    assertIncludes(
      next.stdout,
      "The parent's index is damaged in both copies: making a full backup",
    );
    assertIncludes(next.stdout, "parent=-");
    const after = await revisions(job);
    assertEquals(after.find((v) => v.id === C.id)!.trust, "distrusted");

    // Expiry with both copies of an old index damaged (A): GC still runs for the rest.
    const cfg = join(job, "config");
    await Deno.writeTextFile(
      cfg,
      (await Deno.readTextFile(cfg)) + "schedule:\n  daily: {interval: 1d, keep: 9}\n",
    );
    await corrupt(join(job, `${A.id}.index`), 100, new Uint8Array([0xfe]));
    await corrupt(join(job, `${A.id}.index.mirror`), 100, new Uint8Array([0xfe]));
    const ex = expectOk(await backy(["-b", job, "expire"]));
    assertIncludes(ex.stdout, "Index damaged in both copies; protecting the chunks it still names");
    assert(!ex.stdout.includes("Garbage collection held"), ex.stdout);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("damaged .rev files: reported by verify, never deleted; lost index of a cow revision needs --force", async () => {
  const dir = await tempDir();
  try {
    const { job, revs, src } = await history(dir, "cow");
    const [A, B, C] = revs;
    await corrupt(join(job, `${A.id}.rev`), 120, new Uint8Array([0x7e]));
    const r = await backy(["-b", job, "verify", "--all"]);
    assertEquals(r.code, 1);
    assertIncludes(
      r.stdout,
      `DAMAGED METADATA: corrupt revision file ${job}/${A.id}.rev: checksum mismatch`,
    );
    expectOk(await backy(["-b", job, "backup", "daily"]));
    assert(await fileExists(join(job, `${A.id}.rev`)), "a damaged .rev is never deleted");

    // A cow revision of this version whose index (both copies) is gone.
    await Deno.remove(join(job, `${B.id}.index`));
    await Deno.remove(join(job, `${B.id}.index.mirror`));
    const refused = await backy(["-b", job, "restore", "-r", B.id, join(dir, "b.img")]);
    assertEquals(refused.code, 1);
    assertIncludes(
      refused.stderr,
      `revision ${B.id}: its index file ${job}/${B.id}.index is missing`,
    );
    assertEquals(await fileExists(join(dir, "b.img")), false);
    const forced = expectOk(
      await backy(["-b", job, "restore", "-r", B.id, "--force", join(dir, "b.img")]),
    );
    assertIncludes(forced.stdout, "RESTORING UNCHECKED");
    assert(C && src);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verify --sample and --scrub: a share of the blocks; stalest first within a budget", async () => {
  const dir = await tempDir();
  try {
    const blocks = Array.from({ length: 20 }, (_, i) => 60 + i);
    const { src, job } = await backedUpJob(dir, blocks, "chunked");
    blocks[3] = 99;
    await writeImage(src, blocks);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const [A, B] = await revisions(job);
    const s = expectOk(await backy(["-b", job, "verify", "-r", A.id, "--sample", "10"]));
    assertEquals(s.stdout, `${A.id} OK (2 blocks, 8.00 MiB read)\n`);
    assertEquals((await revisions(job))[0].trust, "trusted", "a sample proves no whole revision");

    // A budget of half a revision: the stalest (never verified: the oldest) goes first, and
    // the budget holds inside it; a cursor (owner-only) says where the next run goes on.
    const cursor = join(job, ".scrub-cursor");
    const t0 = Date.now();
    const one = expectOk(await backy(["-b", job, "verify", "--scrub", "--max-bytes", "40M"]));
    assertEquals(
      one.stdout.split("\n")[0],
      `${A.id} OK (blocks 0-9 of 20, the rest next run: 10 blocks, 40.00 MiB read)`,
    );
    assertIncludes(one.stdout, "scrubbed 1 revision(s), 40.00 MiB read; 0 not verified");
    assertEquals((await revisions(job))[0].trust, "trusted", "half a revision proves nothing");
    assertEquals((await Deno.stat(cursor)).mode! & 0o777, 0o600);
    // ...the next run finishes it; it counts as verified when its first part was read...
    const t1 = Date.now();
    const two = expectOk(await backy(["-b", job, "verify", "--scrub", "--max-bytes", "40M"]));
    assertEquals(
      two.stdout.split("\n")[0],
      `${A.id} OK (blocks 10-19 of 20, the rest read before: 10 blocks, 40.00 MiB read)`,
    );
    const a = (await revisions(job))[0];
    assertEquals(a.trust, "verified");
    const at = Date.parse(String(a.raw.verified_at));
    assert(at >= t0 - 1000 && at < t1, `the first part's time, not ${a.raw.verified_at}`);
    assertEquals(await fileExists(cursor), false);
    // ...and what was proven today is skipped: B next (all of it: chunks are read once per
    // run, not once ever).
    const three = expectOk(await backy(["-b", job, "verify", "--scrub", "--max-bytes", "1G"]));
    assertEquals(three.stdout.split("\n")[0], `${B.id} OK (20 blocks, 80.00 MiB read)`);
    assertIncludes(three.stdout, "0 not verified within 30d");
    // A damaged cursor costs a fresh start, nothing else.
    await Deno.writeTextFile(cursor, "{garbage");
    const four = await backy(["-b", job, "verify", "--scrub", "--max-bytes", "4M"]);
    assertEquals(four.code, 0, four.stderr);
    assertIncludes(four.stderr, "Ignoring a damaged .scrub-cursor");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a scrub in parts: damage found in the first part outlives a clean second part", async () => {
  const dir = await tempDir();
  try {
    const blocks = Array.from({ length: 8 }, (_, i) => 40 + i);
    const { job } = await backedUpJob(dir, blocks, "chunked");
    const chunk = chunkOf(job, randomBytes(BLOCK, 41));
    await corrupt(chunk, 100, new Uint8Array([1, 2, 3]));
    const one = await backy(["-b", job, "verify", "--scrub", "--max-bytes", "16M"]);
    assertEquals(one.code, 1, one.stderr);
    assertIncludes(one.stdout, "DAMAGED: 1 block(s); block 1 (offset 4194304)");
    assertEquals((await revisions(job))[0].trust, "distrusted");
    const two = expectOk(await backy(["-b", job, "verify", "--scrub", "--max-bytes", "16M"]));
    assertIncludes(two.stdout, "OK (blocks 4-7 of 8, the rest read before: 4 blocks");
    assertEquals((await revisions(job))[0].trust, "distrusted", "the first part's damage stays");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a verify killed midway leaves every revision intact; expire cleans leftovers", async () => {
  const dir = await tempDir();
  try {
    const { job, revs } = await history(dir);
    // Three revisions of 60 blocks: long enough to be killed while reading.
    const big = join(dir, "big");
    await Deno.mkdir(big);
    const { src: bigSrc } = await backedUpJob(
      big,
      Array.from({ length: 60 }, (_, i) => i + 1),
      "chunked",
    );
    await writeImage(bigSrc, Array.from({ length: 60 }, (_, i) => i + 2));
    expectOk(await backy(["-b", join(big, "job"), "backup", "daily"]));
    const bigJob = join(big, "job");
    const before = await Promise.all(
      (await revisions(bigJob)).map((v) => Deno.readTextFile(join(bigJob, `${v.id}.rev`))),
    );
    // Killed once it holds the job's lock and reads (tried again if it was too quick).
    let killed = false;
    for (let attempt = 0; attempt < 5 && !killed; attempt++) {
      const child = spawnBacky(["-b", bigJob, "verify", "--all"]);
      for (let i = 0; i < 500; i++) {
        const probe = await new Deno.Command("flock", {
          args: ["-n", join(bigJob, ".backup"), "true"],
        }).output();
        if (probe.code !== 0) break;
        await new Promise((r) => setTimeout(r, 5));
      }
      try {
        child.kill("SIGKILL");
        killed = (await child.output()).signal === "SIGKILL";
      } catch {
        await child.output(); // it was done already
      }
    }
    assert(killed, "a verify was killed while running");
    const after = await Promise.all(
      (await revisions(bigJob)).map((v) => Deno.readTextFile(join(bigJob, `${v.id}.rev`))),
    );
    // Each .rev is the old one or a complete new one (atomic writes), never damaged.
    assertEquals(after.length, before.length);
    expectOk(await backy(["-b", bigJob, "verify", "--all"]));
    expectOk(await backy(["-b", job, "verify", "--all"]));
    assertEquals((await revisions(job)).map((v) => v.id), revs.map((v) => v.id));

    // Leftovers: an orphan index (its .rev removed by a killed expire) and a temp file.
    await Deno.copyFile(
      join(job, `${revs[0].id}.index`),
      join(job, "Orphan00000000000000000.index"),
    );
    await Deno.writeTextFile(join(job, ".last.rev.tmp-abc123"), "");
    const cfg = join(job, "config");
    await Deno.writeTextFile(
      cfg,
      (await Deno.readTextFile(cfg)) + "schedule:\n  daily: {interval: 1d, keep: 9}\n",
    );
    const ex = expectOk(await backy(["-b", job, "expire"]));
    assertIncludes(ex.stdout, "Removed leftovers of interrupted commands");
    assertEquals(await fileExists(join(job, "Orphan00000000000000000.index")), false);
    assertEquals(await fileExists(join(job, ".last.rev.tmp-abc123")), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("design D16: a backup reads back what it wrote; rot in what it shares is the scrub's", async () => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [81, 82, 83, 0], "chunked");
    const [A] = await revisions(job);
    assertEquals(A.raw.stats && (A.raw.stats as Record<string, unknown>).read_back_blocks, 3);
    // One block changes: only it is read back.
    await writeImage(src, [81, 84, 83, 0]);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const B = (await revisions(job))[1];
    const stats = B.raw.stats as Record<string, unknown>;
    assertEquals([stats.verification, stats.read_back_blocks], ["changed", 1]);
    // Rot in a block B shares with A: the next backup does not read it, so it succeeds...
    const chunk = chunkOf(job, randomBytes(BLOCK, 81));
    await corrupt(chunk, 10, new Uint8Array([7, 7]));
    expectOk(await backy(["-b", job, "backup", "daily"]));
    // ...and the scrub finds it, moves it aside, and the next backup stores it anew.
    const bad = await backy(["-b", job, "verify", "--all"]);
    assertEquals(bad.code, 1);
    assertIncludes(bad.stdout, `block 0 (offset 0): chunk ${chunk} is corrupt`);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    expectOk(await backy(["-b", job, "verify", "--all"]));
    const out = join(dir, "a.img");
    expectOk(await backy(["-b", job, "restore", "-r", A.id, out]));
    assert(await filesEqual(out, v1));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a sparse source: holes are not read, the image restores byte-exact", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "sparse.img");
    // 256 MiB with data in blocks 3 and 40 only.
    await writeImage(src, Object.assign(new Array(64).fill(0), { 3: 91, 40: 92 }));
    const job = join(dir, "job");
    expectOk(await backy(["-b", job, "init", "--backend", "chunked", "file", src]));
    expectOk(await backy(["-b", job, "backup", "daily"]));
    const [A] = await revisions(job);
    const stats = A.raw.stats as Record<string, unknown>;
    assertEquals([stats.hole_blocks, stats.blocks], [62, { changed: 2, unchanged: 0, zero: 62 }]);
    const out = join(dir, "out.img");
    expectOk(await backy(["-b", job, "restore", out]));
    assert(await filesEqual(out, src));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
