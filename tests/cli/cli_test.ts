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

Deno.test("unknown subcommand and unknown options are usage errors (exit 2)", async () => {
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /^error: unknown command 'frobnicate'$/im],
    [["-b", "/tmp", "frobnicate", "x"], /^error: unknown command 'frobnicate'$/im],
    [["help", "frobnicate"], /^error: unknown command 'frobnicate'$/im],
    [["status", "extra"], /too many arguments for 'status'/],
    [["--bogus"], /unknown option '--bogus'/],
    [["status", "--bogus"], /unknown option '--bogus'/],
    [["restore", "-x", "t"], /unknown option '-x'/],
    [["backup"], /missing required argument 'tags'/],
    [["init", "file"], /missing required argument 'source'/],
  ];
  for (const [args, msg] of cases) {
    const r = await backy(args);
    assertEquals(r.code, 2, `${args.join(" ")} is a usage error`);
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
        "Error: unknown source type 'nbd' (known: file, ceph-rbd, flyingcircus, s3)",
      ],
      [
        ["init", "--backend", "zfs", "file", "x"],
        "Error: unknown backend 'zfs' (known: cow, chunked, s3)",
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
      assertEquals(r.code, 2, `${args.join(" ")}: a usage error`);
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

Deno.test("typos get a suggestion, global options after the command a corrected line", async () => {
  const cases: [string[], string][] = [
    [["bakup", "daily"], "error: unknown command 'bakup'\n(Did you mean backup?)\n"],
    [["help", "stauts"], "error: unknown command 'stauts'\n(Did you mean status?)\n"],
    [["--verbos", "status"], "error: unknown option '--verbos'\n(Did you mean --verbose?)\n"],
    [
      ["status", "-b", "/srv/backy/vm 1"],
      "error: unknown option '-b'\n" +
      "hint: global options go before the command: backy -b '/srv/backy/vm 1' status\n",
    ],
    [
      ["-v", "restore", "-r", "1", "out.img", "--logfile", "/tmp/l"],
      "error: unknown option '--logfile'\n" +
      "hint: global options go before the command: backy -v --logfile /tmp/l restore -r 1 out.img\n",
    ],
  ];
  for (const [args, stderr] of cases) {
    const r = await backy(args);
    assertEquals({ code: r.code, stdout: r.stdout, stderr: r.stderr }, {
      code: 2,
      stdout: "",
      stderr,
    });
  }
});

Deno.test("check's usage errors are Nagios UNKNOWN (3) on stdout", async () => {
  for (
    const [args, stdout] of [
      [["check", "--bogus"], "UNKNOWN: unknown option '--bogus'\n"],
      [
        ["check", "extra"],
        "UNKNOWN: too many arguments for 'check'. Expected 0 arguments but got 1: extra.\n",
      ],
      [["check", "-c"], "UNKNOWN: option '-c, --config <file>' argument missing\n"],
    ] as const
  ) {
    const r = await backy([...args]);
    assertEquals({ code: r.code, stdout: r.stdout, stderr: r.stderr }, {
      code: 3,
      stdout,
      stderr: "",
    });
  }
  const help = await backy(["check", "--help"]);
  assertEquals(help.code, 0);
  assertMatch(help.stdout, /^Usage: backy check /);
});

Deno.test("help COMMAND is COMMAND --help; restore --help names every target", async () => {
  for (const cmd of ["init", "backup", "restore", "completion"]) {
    const a = await backy(["help", cmd]);
    const b = await backy([cmd, "--help"]);
    assertEquals({ code: a.code, stdout: a.stdout, stderr: a.stderr }, {
      code: 0,
      stdout: b.stdout,
      stderr: "",
    });
  }
  const top = await backy(["help"]);
  assertEquals(top.code, 0);
  assertEquals(top.stdout, (await backy([])).stdout);
  const restore = await backy(["restore", "--help"]);
  for (const w of ["block device", "- for stdout", "rbd:POOL/IMAGE"]) {
    assertIncludes(restore.stdout, w);
  }
});

Deno.test("completion bash completes commands, options and their values in a real bash", async () => {
  const r = await backy(["completion", "bash"]);
  assertEquals(r.code, 0, r.stderr);
  const dir = await tempDir();
  try {
    const script = join(dir, "backy.bash");
    await Deno.writeTextFile(script, r.stdout);
    const complete = async (...words: string[]) => {
      const quoted = words.map((w) => `'${w}'`).join(" ");
      const out = await new Deno.Command("bash", {
        args: [
          "-c",
          `source '${script}'; COMP_WORDS=(${quoted}); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); ` +
          `_backy; printf '%s\\n' "\${COMPREPLY[@]}"`,
        ],
        cwd: dir,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(new TextDecoder().decode(out.stderr), "");
      return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== "");
    };
    assertEquals(await complete("backy", "ba"), ["backup"]);
    assertEquals(await complete("backy", "-b", "/srv", "re"), ["restore"]);
    assertEquals(await complete("backy", "-l", "x", "init", ""), [
      "file",
      "ceph-rbd",
      "flyingcircus",
    ]);
    assertEquals(await complete("backy", "init", "--backend", "c"), ["cow", "chunked"]);
    assertEquals(await complete("backy", "init", "file", "backy.b"), ["backy.bash"]);
    assertEquals(await complete("backy", "restore", "--"), ["--revision", "--force", "--help"]);
    assertEquals(await complete("backy", "restore", "-r", "la"), ["last", "latest"]);
    assertEquals(await complete("backy", "restore", "-r", "1", "backy."), ["backy.bash"]);
    assertEquals(await complete("backy", "help", "comp"), ["completion"]);
    assertEquals(await complete("backy", "completion", ""), ["bash", "zsh"]);
    assertEquals(await complete("backy", "--ver"), ["--version", "--verbose"]);
    assertEquals(await complete("backy", "backup", ""), [], "tags: nothing to suggest");
    const bad = await backy(["completion", "fish"]);
    assertEquals({ code: bad.code, stderr: bad.stderr }, {
      code: 2,
      stderr: "Error: unknown shell 'fish' (known: bash, zsh)\n",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const zsh = await new Deno.Command("zsh", { args: ["-c", "true"] }).output().then(
  (r) => r.success,
  () => false,
);

Deno.test({
  name: `completion zsh loads into zsh's completion system${zsh ? "" : " (ignored: needs zsh)"}`,
  ignore: !zsh,
  fn: async () => {
    const r = await backy(["completion", "zsh"]);
    assertEquals(r.code, 0, r.stderr);
    const dir = await tempDir();
    try {
      const script = join(dir, "_backy");
      await Deno.writeTextFile(script, r.stdout);
      const syntax = await new Deno.Command("zsh", { args: ["-n", script], stderr: "piped" })
        .output();
      assertEquals(new TextDecoder().decode(syntax.stderr), "");
      assertEquals(syntax.code, 0);
      // Loaded by sourcing after compinit, it registers _backy for backy.
      const out = await new Deno.Command("zsh", {
        args: [
          "-f",
          "-c",
          `autoload -U compinit; compinit -u -D; source '${script}'; print -r -- $_comps[backy]`,
        ],
        env: { HOME: dir },
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(new TextDecoder().decode(out.stderr), "");
      assertEquals(new TextDecoder().decode(out.stdout), "_backy\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
