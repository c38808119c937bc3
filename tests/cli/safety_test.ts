/**
 * Safety and local security (issue 10), with real devices, a real unprivileged user
 * (`setpriv` to nobody), real symlinks and real locks: restore targets, lock files, the
 * Consul token, ad-hoc tags, untrusted job directories.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import {
  assertIncludes,
  backedUpJob,
  backy,
  BLOCK,
  bytesEqual,
  expectOk,
  filesEqual,
  isRoot,
  listDir,
  revisions,
  sh,
  tempDir,
} from "../helpers.ts";

const NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
const rootOnly = (name: string, why = "needs root") => ({
  name: `${name}${isRoot() ? "" : ` (ignored: ${why})`}`,
  ignore: !isRoot(),
});

/** A loop device over a new file of `bytes` filled with 0xa5; detached by the cleanup. */
async function loopDevice(dir: string, bytes: number) {
  const backing = join(dir, `loop-${bytes}.img`);
  await Deno.writeFile(backing, new Uint8Array(bytes).fill(0xa5));
  const l = await sh("losetup", ["--find", "--show", backing]);
  assertEquals(l.code, 0, l.err);
  const dev = l.out.trim();
  return { dev, backing, detach: () => sh("losetup", ["-d", dev]) };
}

async function readHead(path: string, n: number): Promise<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const got = await f.read(buf.subarray(off));
      if (got === null) break;
      off += got;
    }
    return buf.subarray(0, off);
  } finally {
    f.close();
  }
}

Deno.test({
  ...rootOnly("block devices: refused when mounted (also through a symlink) or too small"),
  fn: async () => {
    const dir = await tempDir();
    try {
      const { job, v1 } = await backedUpJob(dir, [31, 0, 32], "chunked");
      // A mounted filesystem on a loop device: never overwritten, not even with --force.
      const big = await loopDevice(dir, 64 * 1024 * 1024);
      const mnt = join(dir, "mnt");
      await Deno.mkdir(mnt);
      try {
        assertEquals((await sh("mkfs.ext4", ["-q", big.dev])).code, 0);
        assertEquals((await sh("mount", [big.dev, mnt])).code, 0);
        await Deno.writeTextFile(join(mnt, "precious"), "live data");
        const link = join(dir, "disk-link");
        await Deno.symlink(big.dev, link);
        for (const target of [big.dev, link]) {
          const r = await backy(["-b", job, "restore", "--force", target]);
          assertEquals(r.code, 1, r.stdout);
          assertIncludes(r.stderr, "is in use (mounted or held open exclusively)");
          assert(!r.stderr.includes("    at "), "no stack trace");
        }
        assertEquals(await Deno.readTextFile(join(mnt, "precious")), "live data");
      } finally {
        await sh("umount", [mnt]);
        await big.detach();
      }
      // Smaller than the revision (3 blocks): refused before the first byte.
      const small = await loopDevice(dir, 2 * BLOCK);
      try {
        const r = await backy(["-b", job, "restore", "--force", small.dev]);
        assertEquals(r.code, 1);
        assertIncludes(r.stderr, `restore target ${small.dev} holds 8.00 MiB`);
        assertIncludes(r.stderr, "nothing was written");
        assert((await readHead(small.dev, 2 * BLOCK)).every((b) => b === 0xa5), "untouched");
      } finally {
        await small.detach();
      }
      // Large enough and unused: written with --force.
      const fits = await loopDevice(dir, 3 * BLOCK);
      try {
        expectOk(await backy(["-b", job, "restore", "--force", fits.dev]));
        assert(bytesEqual(await readHead(fits.dev, 3 * BLOCK), await Deno.readFile(v1)));
      } finally {
        await fits.detach();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  ...rootOnly("restore --force keeps the replaced file's owner, group and mode"),
  fn: async () => {
    const dir = await tempDir();
    try {
      const { job, v1 } = await backedUpJob(dir, [33, 34], "chunked");
      const target = join(dir, "vm.img");
      await Deno.writeTextFile(target, "old disk");
      await Deno.chown(target, 65534, 65534);
      await Deno.chmod(target, 0o600);
      expectOk(await backy(["-b", job, "restore", "--force", target]));
      const info = await Deno.stat(target);
      assertEquals([info.uid, info.gid, info.mode! & 0o7777], [65534, 65534, 0o600]);
      assert(await filesEqual(target, v1));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  ...rootOnly("a symlink planted under a restore temp name is never followed"),
  fn: async () => {
    const dir = await tempDir();
    try {
      const { job, v1 } = await backedUpJob(dir, [35], "chunked");
      const out = join(dir, "out");
      await Deno.mkdir(out, { mode: 0o777 });
      await Deno.chmod(out, 0o1777); // a directory others may write to
      const secret = join(dir, "root-only");
      await Deno.writeTextFile(secret, "do not truncate me", { mode: 0o600 });
      // What an attacker would plant: the temp name of a dead restore, pointing at our file.
      const planted = join(out, ".vm.img.backy-restore-999999");
      await Deno.symlink(secret, planted);
      expectOk(await backy(["-b", job, "restore", join(out, "vm.img")]));
      assertEquals(await Deno.readTextFile(secret), "do not truncate me");
      assertEquals(await Deno.readLink(planted), secret, "not ours: left alone");
      assert(await filesEqual(join(out, "vm.img"), v1));
      assertEquals(await listDir(out), [".vm.img.backy-restore-999999", "vm.img"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("restore - refuses a closed stdout (a terminal: interrupt_test.ts)", async () => {
  const dir = await tempDir();
  try {
    const { job } = await backedUpJob(dir, [36], "chunked");
    const closed = await sh("sh", [
      "-c",
      `'${Deno.execPath()}' run --allow-all --quiet '${
        new URL("../../mod.ts", import.meta.url).pathname
      }' -b '${job}' restore - >&-`,
    ]);
    assertEquals(closed.code, 1);
    assertIncludes(closed.err, "stdout is closed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lock files are the owner's alone; a held lock is waited for, bounded, naming the holder", async () => {
  const dir = await tempDir();
  try {
    const { job } = await backedUpJob(dir, [37], "chunked");
    for (const name of [".backup", ".purge"]) {
      assertEquals((await Deno.stat(join(job, name))).mode! & 0o777, 0o600, name);
    }
    // A lock file of an older version (0644) is closed to others at the next use.
    await Deno.chmod(join(job, ".purge"), 0o644);
    expectOk(await backy(["-b", job, "restore", join(dir, "a.img")]));
    assertEquals((await Deno.stat(join(job, ".purge"))).mode! & 0o777, 0o600);

    const holder = new Deno.Command("flock", {
      args: ["-x", join(job, ".purge"), "sleep", "20"],
    }).spawn();
    try {
      for (let i = 0; i < 200; i++) {
        const probe = await sh("flock", ["-n", join(job, ".purge"), "true"]);
        if (probe.code !== 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const started = Date.now();
      const r = await backy(["-b", job, "restore", join(dir, "b.img")], {
        env: { BACKY_LOCK_TIMEOUT: "1" },
      });
      assertEquals(r.code, 1);
      assert(Date.now() - started < 10_000, "bounded");
      assertIncludes(
        r.stderr,
        `timed out after 1 s waiting for lock ${job}/.purge (held by pid ${holder.pid} (`,
      );
      assertIncludes(r.stdout, `Waiting for lock ${job}/.purge, held by pid ${holder.pid}`);
    } finally {
      holder.kill();
      await holder.status;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  ...rootOnly("another user can neither hold a job's locks nor use a job they own"),
  fn: async () => {
    const dir = await tempDir();
    await Deno.chmod(dir, 0o755);
    try {
      const { job, src } = await backedUpJob(dir, [38], "chunked");
      await Deno.chmod(job, 0o755); // even where the directory is open to all
      const r = await sh(NOBODY[0], [
        ...NOBODY.slice(1),
        "flock",
        "-n",
        join(job, ".purge"),
        "true",
      ]);
      assert(r.code !== 0, "flock as nobody cannot even open the lock file");
      assertIncludes(r.err, "Permission denied");

      // A job directory that nobody owns, whose config names a root-only file.
      const evil = join(dir, "evil");
      await Deno.mkdir(evil, { mode: 0o700 });
      await Deno.writeTextFile(join(evil, "config"), "type: file\nfilename: /etc/shadow\n");
      await Deno.chown(evil, 65534, 65534);
      await Deno.chown(join(evil, "config"), 65534, 65534);
      const refused = await backy(["-b", evil, "backup", "daily"]);
      assertEquals(refused.code, 1);
      assertEquals(
        refused.stderr,
        `Error: job directory ${evil} belongs to uid 65534, not to you (uid 0) or root; ` +
          "refusing to trust it\n",
      );
      assertEquals((await listDir(evil)).sort(), ["config"]);

      // A config writable by others.
      await Deno.chmod(join(job, "config"), 0o666);
      const writable = await backy(["-b", job, "status"]);
      assertEquals(writable.code, 1);
      assertIncludes(writable.stderr, `job config ${job}/config is writable by other users`);
      await Deno.chmod(join(job, "config"), 0o600);
      // Readable by others: works, with a warning.
      const warned = expectOk(await backy(["-b", job, "status"]));
      assertIncludes(warned.stderr, `job directory ${job} is readable by other users (mode 0755)`);
      assert(src);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("new job directories and configs are the owner's alone; the token is never logged", async () => {
  const dir = await tempDir();
  try {
    const job = join(dir, "vm");
    const log = join(dir, "backy.log");
    expectOk(
      await backy(["-l", log, "-b", job, "init", "flyingcircus", "rbd/vm.root,vm,S3CRET-TOKEN"]),
    );
    assertEquals((await Deno.stat(job)).mode! & 0o777, 0o700);
    assertEquals((await Deno.stat(join(job, "config"))).mode! & 0o777, 0o600);
    assertEquals(
      YAML.parse(await Deno.readTextFile(join(job, "config"))).consul_acl_token,
      "S3CRET-TOKEN",
    );
    const logged = await Deno.readTextFile(log);
    assertIncludes(logged, "init flyingcircus rbd/vm.root,vm,***");
    assert(!logged.includes("S3CRET"), logged);
    // `init -b FILE`: a clear error, no stack trace.
    const file = join(dir, "plain-file");
    await Deno.writeTextFile(file, "");
    const r = await backy(["-b", file, "init", "file", "/dev/null"]);
    assertEquals(r.code, 1);
    assertEquals(
      r.stderr,
      `Error: cannot create job directory ${file}: it exists and is not a directory\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tags outside the schedule: refused, manual: and --force accepted; tags and expire --dry-run", async () => {
  const dir = await tempDir();
  try {
    const { job } = await backedUpJob(dir, [39], "chunked");
    const cfg = YAML.parse(await Deno.readTextFile(join(job, "config")));
    cfg.schedule = { daily: { interval: 86400, keep: 2 } };
    await Deno.writeTextFile(join(job, "config"), YAML.stringify(cfg), { mode: 0o600 });

    const refused = await backy(["-b", job, "backup", "pre-upgrade"]);
    assertEquals(refused.code, 1);
    assertEquals(
      refused.stderr,
      "Error: tag 'pre-upgrade' not in the job's schedule (daily): the next expiry would " +
        "remove it and then the revision; use 'manual:pre-upgrade' to keep it until you " +
        "remove the tag, or --force\n",
    );
    assertEquals((await revisions(job)).length, 1, "nothing started");
    expectOk(await backy(["-b", job, "backup", "manual:pre-upgrade"]));
    const forced = expectOk(await backy(["-b", job, "backup", "--force", "adhoc"]));
    assertIncludes(forced.stdout, "not in the job's schedule: the next expiry removes them");
    const [a, b, c] = await revisions(job);
    assertEquals([a.tags, b.tags, c.tags], [["daily"], ["manual:pre-upgrade"], ["adhoc"]]);

    // Pin the first revision; release the pinned one.
    const pinned = expectOk(await backy(["-b", job, "tags", "-r", a.id, "add", "manual:keep"]));
    assertEquals(pinned.stdout, `${a.id} daily,manual:keep\n`);
    const bad = await backy(["-b", job, "tags", "-r", a.id, "add", "weekly"]);
    assertEquals(bad.code, 1);
    assertIncludes(bad.stderr, "tag 'weekly' not in the job's schedule");
    expectOk(await backy(["-b", job, "tags", "-r", b.id, "set", "daily"]));
    assertEquals((await revisions(job)).map((r) => r.tags), [
      ["daily", "manual:keep"],
      ["daily"],
      ["adhoc"],
    ]);

    // A dry run names what would go and changes nothing.
    const before = await Deno.readTextFile(join(job, `${c.id}.rev`));
    const dry = expectOk(await backy(["-b", job, "expire", "--dry-run"]));
    assertEquals(dry.stdout, `would remove tags adhoc from ${c.id}\n`);
    assertEquals(await Deno.readTextFile(join(job, `${c.id}.rev`)), before);
    assertEquals((await revisions(job)).length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
