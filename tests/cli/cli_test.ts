/** Black-box: the command line itself (spec 1.1, 1.2) and `init`. */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  backy,
  expectOk,
  fileExists,
  initJob,
  listDir,
  tempDir,
} from "../helpers.ts";

Deno.test("no subcommand prints usage on stdout and exits 0", async () => {
  const r = await backy([]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stdout, /^Usage: backy /m);
  for (const cmd of ["init", "backup", "restore", "find", "status"]) {
    assertMatch(r.stdout, new RegExp(`^  ${cmd}\\b`, "m"), `usage lists ${cmd}`);
  }
  assertIncludes(r.stdout, "Backup and restore for block devices.");
  assertEquals(r.stderr, "");
});

Deno.test("--help of the program and of every subcommand exits 0 on stdout", async () => {
  const top = await backy(["--help"]);
  assertEquals(top.code, 0);
  assertIncludes(top.stdout, "-b, --backupdir <dir>");
  assertIncludes(top.stdout, "-l, --logfile <file>");
  const expect: Record<string, string[]> = {
    init: ["<type>", "<source>", "--backend"],
    backup: ["<tags>"],
    restore: ["<target>", "-r, --revision", "-f, --force"],
    find: ["-r, --revision"],
    status: [],
  };
  for (const [cmd, words] of Object.entries(expect)) {
    const r = await backy([cmd, "--help"]);
    assertEquals(r.code, 0, `${cmd} --help: ${r.stderr}`);
    assertMatch(r.stdout, new RegExp(`^Usage: backy ${cmd}\\b`, "m"));
    for (const w of words) assertIncludes(r.stdout, w, `${cmd} --help mentions ${w}`);
  }
});

Deno.test("unknown subcommand and unknown options fail with a message", async () => {
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /^error: unknown command 'frobnicate'$/im],
    [["-b", "/tmp", "frobnicate", "x"], /^error: unknown command 'frobnicate'$/im],
    [["status", "extra"], /too many arguments for 'status'/],
    [["--bogus"], /unknown option '--bogus'/],
    [["status", "--bogus"], /unknown option '--bogus'/],
    [["restore", "-x", "t"], /unknown option '-x'/],
    [["backup"], /missing required argument 'tags'/],
    [["init", "file"], /missing required argument 'source'/],
  ];
  for (const [args, msg] of cases) {
    const r = await backy(args);
    assert(r.code !== 0, `${args.join(" ")} must fail`);
    assertMatch(r.stderr, msg, `${args.join(" ")}: ${r.stderr}`);
    assertEquals(r.stdout, "", `${args.join(" ")} prints nothing on stdout`);
  }
});

Deno.test("init writes the job config with type, filename and backend", async () => {
  const dir = await tempDir();
  try {
    for (const backend of ["cow", "chunked"] as const) {
      const job = join(dir, `nested/${backend}`);
      const r = expectOk(
        await backy(["-b", job, "init", "--backend", backend, "file", "/srv/img"]),
      );
      assertIncludes(r.stdout, "Source does not exist");
      assertEquals(
        await Deno.readTextFile(join(job, "config")),
        `type: file\nfilename: /srv/img\nbackend: ${backend}\n`,
      );
    }
    // Without --backend the job directory's filesystem is probed: /tmp here (no reflink on
    // ext4/tmpfs gives chunked, a reflink filesystem gives cow). Either way it is recorded.
    const job = join(dir, "probed");
    expectOk(await backy(["-b", job, "init", "file", "img"]));
    assertMatch(
      await Deno.readTextFile(join(job, "config")),
      /^type: file\nfilename: img\nbackend: (cow|chunked)\n$/,
    );
    assertEquals(
      (await listDir(job)).filter((n) => n.startsWith(".reflink-probe")),
      [],
      "probe files removed",
    );
    // The default job directory is the current one.
    const cwdJob = join(dir, "cwd");
    await Deno.mkdir(cwdJob);
    expectOk(await backy(["init", "--backend", "chunked", "file", "x.img"], { cwd: cwdJob }));
    assert(await fileExists(join(cwdJob, "config")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init refuses an existing job and leaves its config untouched", async () => {
  const dir = await tempDir();
  try {
    const job = join(dir, "job");
    await initJob(job, "/srv/a.img", "chunked");
    const before = await Deno.readTextFile(join(job, "config"));
    const r = await backy(["-b", job, "init", "--backend", "cow", "file", "/srv/b.img"]);
    assertEquals(r.code, 1);
    assertEquals(
      r.stderr,
      `Error: ${job} is already a job directory (config exists); not touching it\n`,
    );
    assertEquals(await Deno.readTextFile(join(job, "config")), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init rejects unknown types, backends and bad ceph/flyingcircus sources", async () => {
  const dir = await tempDir();
  try {
    const job = join(dir, "job");
    const cases: [string[], string][] = [
      [
        ["init", "nbd", "x"],
        "Error: unknown source type 'nbd' (known: file, ceph-rbd, flyingcircus)",
      ],
      [
        ["init", "--backend", "zfs", "file", "x"],
        "Error: unknown backend 'zfs' (known: cow, chunked)",
      ],
      [["init", "ceph-rbd", "poolimage"], "Error: ceph source must be initialized with POOL/IMAGE"],
      [["init", "ceph-rbd", "a/b/c"], "Error: ceph source must be initialized with POOL/IMAGE"],
      [["init", "ceph-rbd", "/img"], "Error: ceph source must be initialized with POOL/IMAGE"],
      [
        ["init", "flyingcircus", "pool/image"],
        "Error: flyingcircus source must be initialized with POOL/IMAGE,VM[,CONSUL_ACL_TOKEN]",
      ],
      [
        ["init", "flyingcircus", "pool/image,vm,token,extra"],
        "Error: flyingcircus source must be initialized with POOL/IMAGE,VM[,CONSUL_ACL_TOKEN]",
      ],
      [
        ["init", "flyingcircus", "poolimage,vm"],
        "Error: flyingcircus source must be initialized with POOL/IMAGE,VM[,CONSUL_ACL_TOKEN]",
      ],
    ];
    for (const [args, msg] of cases) {
      const r = await backy(["-b", job, ...args]);
      assertEquals(r.code, 1, args.join(" "));
      assertEquals(r.stderr, msg + "\n", args.join(" "));
      assertEquals(await fileExists(join(job, "config")), false, `${args.join(" ")}: no config`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("init accepts ceph-rbd and flyingcircus sources (whitespace stripped)", async () => {
  const dir = await tempDir();
  try {
    expectOk(
      await backy(["-b", join(dir, "c"), "init", "--backend", "chunked", "ceph-rbd", "rbd/vm01"]),
    );
    assertEquals(
      await Deno.readTextFile(join(dir, "c", "config")),
      "type: ceph-rbd\npool: rbd\nimage: vm01\nbackend: chunked\n",
    );
    expectOk(
      await backy([
        "-b",
        join(dir, "f"),
        "init",
        "--backend",
        "chunked",
        "flyingcircus",
        " rbd/vm01.root , vm01 ",
      ]),
    );
    assertEquals(
      await Deno.readTextFile(join(dir, "f", "config")),
      "type: flyingcircus\npool: rbd\nimage: vm01.root\nvm: vm01\nconsul_acl_token: null\n" +
        "backend: chunked\n",
    );
    expectOk(
      await backy([
        "-b",
        join(dir, "t"),
        "init",
        "--backend",
        "chunked",
        "flyingcircus",
        "rbd/vm01.root,vm01,s3cr3t",
      ]),
    );
    assertIncludes(
      await Deno.readTextFile(join(dir, "t", "config")),
      "consul_acl_token: s3cr3t\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job config with an unknown source type is a clean error", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(join(dir, "config"), "type: nbd\nurl: x\n");
    for (const args of [["status"], ["backup", "daily"], ["find"]]) {
      const r = await backy(["-b", dir, ...args]);
      assertEquals(r.code, 1, args.join(" "));
      assertEquals(
        r.stderr,
        `Error: unknown source type 'nbd' in ${join(dir, "config")} ` +
          "(known: file, ceph-rbd, flyingcircus)\n",
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
