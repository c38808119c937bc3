/**
 * Black-box: bad input (issue 2): missing or unreadable sources, `-b` on something that is
 * not a job, corrupt and truncated `.rev` files, unknown and ambiguous revision specs, and
 * a second backup of a job that is already being backed up.
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
  expectOk,
  fileExists,
  filesEqual,
  initJob,
  isRoot,
  legacyJob,
  listDir,
  revisions,
  spawnBacky,
  tempDir,
  WITHOUT_DAC_OVERRIDE,
  writeImage,
} from "../helpers.ts";

Deno.test("missing and unreadable sources fail; earlier revisions stay restorable", async (t) => {
  const dir = await tempDir();
  try {
    const { src, job, v1 } = await backedUpJob(dir, [21, 0, 22], "chunked");
    const filesBefore = await listDir(job);

    const failsWith = async (message: string | RegExp, wrap?: string[]) => {
      const r = await backy(["-b", job, "backup", "daily"], { wrap });
      assertEquals(r.code, 1, r.stdout);
      if (typeof message === "string") assertEquals(r.stderr, `Error: ${message}\n`);
      else assertMatch(r.stderr, message);
      assertEquals(await listDir(job), filesBefore, "no revision, no leftovers");
      assertEquals((await revisions(job)).length, 1);
    };

    await t.step("missing source", async () => {
      await Deno.rename(src, `${src}.away`);
      await failsWith(`source ${src} does not exist`);
    });

    await t.step("a directory as source", async () => {
      await Deno.mkdir(src);
      await failsWith(`source ${src} is not a regular file or block device`);
      await Deno.remove(src);
    });

    await t.step("a symlink loop as source (unreadable even for root)", async () => {
      await Deno.symlink(src, src); // src -> src
      await failsWith(
        new RegExp(
          `^Error: cannot access source ${src}: Too many levels of symbolic links.*\\n$`,
        ),
      );
      await Deno.remove(src);
    });

    await t.step({
      // Root reads any file: as root, backy runs without CAP_DAC_OVERRIDE (setpriv).
      name: "a source without read permission",
      fn: async () => {
        await Deno.rename(`${src}.away`, src);
        await Deno.chmod(src, 0o000);
        try {
          await failsWith(
            /^Error: cannot read source .*: Permission denied/,
            isRoot() ? WITHOUT_DAC_OVERRIDE : undefined,
          );
        } finally {
          await Deno.chmod(src, 0o644);
          await Deno.rename(src, `${src}.away`);
        }
      },
    });

    await t.step("the earlier revision still restores; the source back, backups work", async () => {
      const out = join(dir, "out1");
      expectOk(await backy(["-b", job, "restore", out]));
      assert(await filesEqual(out, v1));
      await Deno.rename(`${src}.away`, src);
      expectOk(await backy(["-b", job, "backup", "daily"]));
      assertEquals((await revisions(job)).length, 2);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("-b pointing at something that is not a job directory", async () => {
  const dir = await tempDir();
  try {
    const empty = join(dir, "empty");
    await Deno.mkdir(empty);
    const commands = [["status"], ["backup", "daily"], ["find"], ["restore", join(dir, "o")]];
    for (const args of commands) {
      const r = await backy(["-b", empty, ...args]);
      assertEquals(r.code, 1, args.join(" "));
      assertEquals(
        r.stderr,
        `Error: ${empty} is not a backy job directory (no config file); ` +
          "create one with 'backy init'\n",
      );
      assertEquals(r.stdout, "");
    }
    assertEquals(await listDir(empty), [], "nothing written into a non-job directory");
    assertEquals(await fileExists(join(dir, "o")), false);

    const missing = join(dir, "missing");
    for (const args of commands) {
      const r = await backy(["-b", missing, ...args]);
      assertEquals(r.code, 1, args.join(" "));
      assert(r.stderr.startsWith(`Error: cannot open job directory ${missing}: `), r.stderr);
      assertIncludes(r.stderr, "No such file or directory");
    }
    assertEquals(await fileExists(missing), false, "no job directory created by accident");

    const file = join(dir, "plain");
    await Deno.writeTextFile(file, "x");
    const r = await backy(["-b", file, "status"]);
    assertEquals(r.code, 1);
    assertMatch(r.stderr, /^Error: cannot read .*plain\/config: Not a directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("corrupt and truncated .rev files are reported, the rest keeps working", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "src.img");
    const job = join(dir, "job");
    await initJob(job, src, "chunked");
    const versions: string[] = [];
    for (let i = 0; i < 4; i++) {
      await writeImage(src, [31 + i, 0, 40]);
      expectOk(await backy(["-b", job, "backup", "daily"]));
      versions.push(join(dir, `v${i}.img`));
      await Deno.copyFile(src, versions[i]);
    }
    const [A, B, C, D] = await revisions(job);
    const bRev = join(job, `${B.id}.rev`);
    const cRev = join(job, `${C.id}.rev`);
    await Deno.chmod(bRev, 0o640);
    await Deno.writeTextFile(bRev, "uuid: [unclosed\ntimestamp: {\n");
    const cText = await Deno.readTextFile(cRev);
    await Deno.chmod(cRev, 0o640);
    await Deno.writeTextFile(cRev, cText.slice(0, Math.floor(cText.length / 2)));

    const s = expectOk(await backy(["-b", job, "status"]));
    const warnings = s.stderr.trimEnd().split("\n").sort();
    assertEquals(warnings.length, 2, s.stderr);
    const bWarn = warnings.find((w) => w.includes(B.id))!;
    const cWarn = warnings.find((w) => w.includes(C.id))!;
    assert(bWarn.startsWith(`Warning: ignoring corrupt revision file ${bRev}: `), bWarn);
    assertEquals(
      cWarn,
      `Warning: ignoring corrupt revision file ${cRev}: ` +
        "checksum mismatch (damaged, or edited by hand: use 'backy tags' to change tags)",
    );
    assertIncludes(s.stdout, A.id);
    assertIncludes(s.stdout, D.id);
    assert(!s.stdout.includes(B.id) && !s.stdout.includes(C.id));
    assertMatch(s.stdout, /\n2 revisions containing .* data \(estimated\)\n$/);

    // Numbers count what status shows: 0 = D, 1 = A.
    for (const [spec, want] of [["0", 3], ["1", 0], [A.id, 0], ["last", 3]] as const) {
      const out = join(dir, `out-${spec}`);
      const r = expectOk(await backy(["-b", job, "restore", "-r", spec, out]));
      assertIncludes(r.stderr, "Warning: ignoring corrupt revision file");
      assert(await filesEqual(out, versions[want]), `-r ${spec}`);
    }
    const r = await backy(["-b", job, "restore", "-r", B.id, join(dir, "outB")]);
    assertEquals(r.code, 1);
    assertIncludes(r.stderr, `Error: Cannot find revision in ${job}: '${B.id}'`);

    // The next backup works, diffs against D, and deletes nothing it cannot read.
    await writeImage(src, [50, 0, 40]);
    expectOk(await backy(["-b", job, "backup", "daily"]));
    for (const f of [`${B.id}.rev`, `${B.id}.index`, `${C.id}.rev`, `${C.id}.index`]) {
      assert(await fileExists(join(job, f)), `${f} kept as evidence`);
    }
    const known = [A, B, C, D].map((r) => `${r.id}.rev`);
    const fresh = (await listDir(job)).filter((n) =>
      n.endsWith(".rev") && n !== "last.rev" && !known.includes(n)
    );
    assertEquals(fresh.length, 1);
    assertMatch(await Deno.readTextFile(join(job, fresh[0])), new RegExp(`^parent: ${D.id}$`, "m"));
    const out = join(dir, "out-new");
    expectOk(await backy(["-b", job, "restore", out]));
    assert(await filesEqual(out, src));
    const s2 = expectOk(await backy(["-b", job, "status"]));
    assertMatch(s2.stdout, /\n3 revisions containing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unknown revision specs name the job and the spec", async () => {
  const dir = await tempDir();
  try {
    const src = join(dir, "src.img");
    const job = join(dir, "job");
    await writeImage(src, [61]);
    await initJob(job, src, "cow");
    expectOk(await backy(["-b", job, "backup", "daily"]));
    for (const spec of ["nope", "-1", "1", "99", "weekly", ""]) {
      for (const cmd of [["find", "-r", spec], ["restore", "-r", spec, join(dir, "out")]]) {
        const r = await backy(["-b", job, ...cmd]);
        assertEquals(r.code, 1, cmd.join(" "));
        assertEquals(r.stderr, `Error: Cannot find revision in ${job}: '${spec}'\n`);
        assertEquals(r.stdout, "");
      }
    }
    assertEquals(await fileExists(join(dir, "out")), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an ambiguous ID prefix is an error naming the candidates", async () => {
  const dir = await tempDir();
  try {
    const img = join(dir, "img");
    await writeImage(img, [71]);
    const job = join(dir, "job");
    const rev = (id: string, ts: string) => ({
      id,
      image: img,
      timestamp: ts,
      parent: null,
      bytesWritten: BLOCK,
      duration: 1.5,
      tags: ["daily"],
    });
    await legacyJob(job, img, [
      rev("abcX1", "2016-01-01 10:00:00.000000+00:00"),
      rev("abcY2", "2016-01-02 10:00:00.000000+00:00"),
      rev("abd", "2016-01-03 10:00:00.000000+00:00"),
    ]);
    for (const cmd of [["find", "-r", "abc"], ["restore", "-r", "abc", join(dir, "out")]]) {
      const r = await backy(["-b", job, ...cmd]);
      assertEquals(r.code, 1);
      assertEquals(r.stderr, `Error: Ambiguous revision 'abc' in ${job}: matches abcX1, abcY2\n`);
    }
    assertEquals(await fileExists(join(dir, "out")), false);
    const f = expectOk(await backy(["-b", job, "find", "-r", "abcY"]));
    assertEquals(f.stdout, `${job}/abcY2\n`);
    // An exact ID wins over being a prefix of nothing else; "ab" matches all three.
    assertEquals(expectOk(await backy(["-b", job, "find", "-r", "abd"])).stdout, `${job}/abd\n`);
    const all = await backy(["-b", job, "find", "-r", "ab"]);
    assertEquals(
      all.stderr,
      `Error: Ambiguous revision 'ab' in ${job}: matches abcX1, abcY2, abd\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a second backup of the same job fails at once, readers are not blocked", async (t) => {
  const dir = await tempDir();
  try {
    const { job, v1 } = await backedUpJob(dir, [81, 82], "cow");
    // The holder is named: `flock ... cat` in the first step, backy in the second.
    const busy = (holder: string) =>
      new RegExp(
        `^Error: another backup of ${job} is running \\(lock ${job}/\\.backup is held by ` +
          `pid \\d+ \\(${holder}\\)\\)\n$`,
      );

    await t.step("lock held by flock(1)", async () => {
      const holder = new Deno.Command("flock", {
        args: [join(job, ".backup"), "cat"],
        stdin: "piped",
        stdout: "null",
      }).spawn();
      try {
        // Wait until flock holds it.
        for (let i = 0; i < 200; i++) {
          const probe = await new Deno.Command("flock", {
            args: ["-n", join(job, ".backup"), "true"],
          }).output();
          if (probe.code !== 0) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        const started = Date.now();
        const r = await backy(["-b", job, "backup", "daily"]);
        assert(Date.now() - started < 5000, "fails at once instead of waiting");
        assertEquals(r.code, 1);
        assertMatch(r.stderr, busy(`\\S*flock ${job}/\\.backup cat`));
        assertEquals((await revisions(job)).length, 1, "no revision started");
        // Readers take the shared .purge lock only.
        expectOk(await backy(["-b", job, "status"]));
        const out = join(dir, "during");
        expectOk(await backy(["-b", job, "restore", out]));
        assert(await filesEqual(out, v1));
      } finally {
        await holder.stdin.close();
        await holder.status;
      }
      expectOk(await backy(["-b", job, "backup", "daily"]), "backup after the lock is gone");
    });

    await t.step("while another backup runs", async () => {
      // Make the running backup slow where it already holds the lock: its clone step.
      const cp = join(dir, "slow-cp");
      await Deno.writeTextFile(
        cp,
        '#!/bin/sh\ncase "$1" in --reflink*) sleep 3 ;; esac\nexec cp "$@"\n',
      );
      await Deno.chmod(cp, 0o755);
      const before = (await revisions(job)).map((r) => r.id);
      const first = spawnBacky(["-b", job, "backup", "first"], { env: { BACKY_CP: cp } });
      let seen = false;
      for (let i = 0; i < 500 && !seen; i++) {
        seen = (await revisions(job)).some((r) => !before.includes(r.id));
        if (!seen) await new Promise((r) => setTimeout(r, 10));
      }
      assert(seen, "the first backup started its revision");
      const second = await backy(["-b", job, "backup", "second"]);
      const out = await first.output();
      assertEquals(second.code, 1);
      assertMatch(second.stderr, busy(`.*mod\\.ts -b ${job} backup first`));
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      const revs = await revisions(job);
      assertEquals(revs.at(-1)!.tags, ["first"]);
      assert(!revs.some((r) => r.tags.includes("second")));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
