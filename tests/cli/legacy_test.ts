/**
 * Black-box: a job directory exactly as backy 2.1 left it (design D1): raw images, 2.1
 * `.rev` files, `last` links, no index, no backend in the config. status, find, restore
 * and the next backup must work on it unchanged.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backy,
  BLOCK,
  expectOk,
  fileExists,
  filesEqual,
  legacyJob,
  listDir,
  revisions,
  tempDir,
  writeImage,
} from "../helpers.ts";

const OLD = "ed968696-5ab0-4fe0-af1c-14cadab44661"; // pre-2.0b2 UUID style
const MID = "VqB7sDmAhjLx5eyAZqEhVs";
const BROKEN = "Z9cRqJ3wNXkH7pLmTa2sYd"; // crashed: no duration

Deno.test("a backy 2.1 job directory: status, find, restore, next backup", async (t) => {
  const dir = await tempDir();
  try {
    const src = join(dir, "src.img");
    const job = join(dir, "job");
    const v1 = join(dir, "v1.img");
    const v2 = join(dir, "v2.img");
    await writeImage(v1, [201, 0, 202]);
    await writeImage(v2, [201, 203, 202]);
    await writeImage(src, [201, 203, 204]);
    await legacyJob(job, src, [
      {
        id: OLD,
        image: v1,
        timestamp: "2015-09-01 07:06:47.123456+00:00",
        parent: null,
        bytesWritten: 3 * BLOCK,
        duration: 31.1,
        tags: ["daily", "weekly"],
      },
      {
        id: MID,
        image: v2,
        timestamp: "2015-09-02 07:06:47.654321+00:00",
        parent: OLD,
        bytesWritten: 3 * BLOCK,
        duration: 845.0,
        tags: ["daily"],
      },
      {
        id: BROKEN,
        image: v2,
        timestamp: "2015-09-03 07:06:47.000001+00:00",
        parent: MID,
        bytesWritten: 0,
        tags: ["daily"],
      },
    ], MID);
    const revText = await Deno.readTextFile(join(job, `${OLD}.rev`));

    await t.step("status prints the 2.1 table", async () => {
      const r = expectOk(await backy(["-b", job, "status"]));
      assertEquals(r.stderr, "");
      assertEquals(
        r.stdout,
        [
          "+---------------------+--------------------------------------+-----------+---------+--------------+",
          "| Date (UTC)          | ID                                   |      Size |   Durat | Tags         |",
          "+---------------------+--------------------------------------+-----------+---------+--------------+",
          "| 2015-09-01 07:06:47 | ed968696-5ab0-4fe0-af1c-14cadab44661 | 12.00 MiB |  31.1 s | daily,weekly |",
          "| 2015-09-02 07:06:47 | VqB7sDmAhjLx5eyAZqEhVs               | 12.00 MiB | 845.0 s | daily        |",
          "| 2015-09-03 07:06:47 | Z9cRqJ3wNXkH7pLmTa2sYd               |   0 Bytes |     0 s | daily        |",
          "+---------------------+--------------------------------------+-----------+---------+--------------+",
          "3 revisions containing 24.00 MiB data (estimated)",
          "",
        ].join("\n"),
      );
    });

    await t.step("find resolves numbers, tags, last and IDs to raw images", async () => {
      const cases: [string[], string][] = [
        [[], MID], // last = newest complete
        [["-r", "0"], BROKEN], // numbers count everything status shows
        [["-r", "1"], MID],
        [["-r", "2"], OLD],
        [["-r", "weekly"], OLD],
        [["-r", "daily"], MID],
        [["-r", "ed968696"], OLD],
      ];
      for (const [args, id] of cases) {
        const r = expectOk(await backy(["-b", job, "find", ...args]));
        assertEquals(r.stdout, `${job}/${id}\n`, args.join(" "));
      }
    });

    await t.step("restore: both complete revisions, not the crashed one", async () => {
      for (const [spec, want] of [[OLD, v1], ["last", v2], ["1", v2]]) {
        const out = join(dir, `out-${spec}`);
        expectOk(await backy(["-b", job, "restore", "-r", spec, out]));
        assert(await filesEqual(out, want), `restore -r ${spec}`);
        await Deno.remove(out);
      }
      const r = await backy(["-b", job, "restore", "-r", "0", "-"]);
      assertEquals(r.code, 1);
      assertIncludes(r.stderr, `Error: revision ${BROKEN} is incomplete`);
      assertEquals(r.stdoutBytes.length, 0);
    });

    await t.step("the next backup works on top of the 2.1 revisions", async () => {
      const b = expectOk(await backy(["-b", job, "backup", "daily"]));
      assertIncludes(b.stdout, `Removing incomplete revision id=${BROKEN}`);
      assertEquals(await fileExists(join(job, BROKEN)), false);
      assertEquals(await fileExists(join(job, `${BROKEN}.rev`)), false);
      const revs = await revisions(job);
      assertEquals(revs.map((r) => r.id).slice(0, 2), [OLD, MID]);
      const N = revs[2];
      assertEquals(N.parent, MID);
      assertEquals(N.raw.backend, "cow");
      // The legacy parent has no index: its image was hashed, only block 2 differs.
      assertEquals((N.raw.stats as { blocks: unknown }).blocks, {
        changed: 1,
        unchanged: 2,
        zero: 0,
      });
      assertEquals(N.bytesWritten, BLOCK);
      assertEquals(await Deno.readLink(join(job, "last")), N.id);
      assertEquals(await Deno.readLink(join(job, "last.rev")), `${N.id}.rev`);
      assertEquals(await Deno.readTextFile(join(job, `${OLD}.rev`)), revText, "2.1 files kept");
      assertEquals(await fileExists(join(job, `${OLD}.index`)), false);
      assertEquals(
        await Deno.readTextFile(join(job, "config")),
        `type: file\nfilename: ${src}\n`,
        "config untouched",
      );

      for (const [spec, want] of [["last", src], [MID, v2], [OLD, v1]]) {
        const out = join(dir, `new-${spec}`);
        expectOk(await backy(["-b", job, "restore", "-r", spec, out]));
        assert(await filesEqual(out, want), `restore -r ${spec}`);
      }
      const f = expectOk(await backy(["-b", job, "find"]));
      assertEquals(f.stdout, `${job}/${N.id}\n`);
      assert(await filesEqual(join(job, "last"), src), "the last link reads as the image");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a dangling last link (2.0 expiry bug) breaks nothing", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "src.img");
    const job = join(dir, "job");
    const v1 = join(dir, "v1.img");
    await writeImage(v1, [211, 0, 212]);
    await writeImage(src, [211, 213, 212]);
    await legacyJob(job, src, [{
      id: "only-rev",
      image: v1,
      timestamp: "2016-01-08 12:00:00.000000+00:00",
      parent: null,
      bytesWritten: 2 * BLOCK,
      duration: 2.5,
      tags: ["daily"],
    }]);
    await Deno.symlink("expired-rev", join(job, "last"));
    await Deno.symlink("expired-rev.rev", join(job, "last.rev"));

    const s = expectOk(await backy(["-b", job, "status"]));
    assertEquals(s.stderr, "");
    assertIncludes(s.stdout, "only-rev");
    assertIncludes(s.stdout, "\n1 revisions containing 8.00 MiB data (estimated)\n");
    assertEquals(expectOk(await backy(["-b", job, "find"])).stdout, `${job}/only-rev\n`);
    const out = join(dir, "out");
    expectOk(await backy(["-b", job, "restore", "-r", "last", out]));
    assert(await filesEqual(out, v1));

    expectOk(await backy(["-b", job, "backup", "daily"]));
    const revs = await revisions(job);
    assertEquals(revs.length, 2);
    assertEquals(revs[1].parent, "only-rev");
    assertEquals(await Deno.readLink(join(job, "last")), revs[1].id);
    assert(await filesEqual(join(job, "last"), src));
    assertEquals((await listDir(job)).filter((n) => n.includes("expired")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("2.1 .rev variants: naive timestamps, float epochs, legacy keys, no stats", async () => {
  const dir = await tempDir();
  try {
    const img = join(dir, "img");
    await writeImage(img, [221]);
    const job = join(dir, "job");
    await legacyJob(job, img, []);
    const write = async (id: string, text: string) => {
      await Deno.copyFile(img, join(job, id));
      await Deno.writeTextFile(join(job, `${id}.rev`), text);
    };
    // sample1.rev of 2.1's tests: legacy `type`, naive timestamp, no stats (incomplete).
    await write("asdf", "uuid: asdf\ntype: full\ntimestamp: 2015-08-01T20:00:00\nparent:\n");
    await write(
      "epoch",
      "uuid: epoch\ntimestamp: 1438462800.5\nparent: asdf\nstats: {bytes_written: 4194304, duration: 1.0}\n",
    );
    await write(
      "offset",
      "uuid: offset\ntimestamp: 2015-08-01 23:30:00+02:00\nparent: epoch\n" +
        "stats:\n  bytes_written: 1024\n  duration: 12\ntags:\n- weekly\n",
    );
    const r = expectOk(await backy(["-b", job, "status"]));
    const rows = r.stdout.split("\n").filter((l) => l.startsWith("| 2015"));
    assertEquals(rows, [
      "| 2015-08-01 20:00:00 | asdf   |  0 Bytes |    0 s |        |",
      "| 2015-08-01 21:00:00 | epoch  | 4.00 MiB |  1.0 s |        |",
      "| 2015-08-01 21:30:00 | offset | 1.00 kiB | 12.0 s | weekly |",
    ]);
    const f = expectOk(await backy(["-b", job, "find", "-r", "weekly"]));
    assertEquals(f.stdout, `${job}/offset\n`);
    const out = join(dir, "out");
    expectOk(await backy(["-b", job, "restore", out]));
    assert(await filesEqual(out, img));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
