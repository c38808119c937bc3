/**
 * The offline artifact (`deno task dist`, issue 12): dist/backy.js runs through its own `#!`
 * line with only the deno binary, an empty DENO_DIR and no network — init, backup (its
 * data-path Workers), status, restore to a file and to stdout, and the scheduler running
 * backy itself from the artifact. The network is cut with `unshare -n` (root); elsewhere
 * every HTTP(S) proxy points at a closed port and DENO_DIR is empty, so any download fails.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { join } from "node:path";
import {
  assertIncludes,
  bytesEqual,
  filesEqual,
  isRoot,
  ROOT,
  sh,
  tempDir,
  writeImage,
} from "../helpers.ts";
import { delay, freePort } from "../scheduler/harness.ts";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  bytes: Uint8Array;
}

async function canUnshareNet(): Promise<boolean> {
  if (!isRoot()) return false;
  return (await sh("unshare", ["-n", "true"]).catch(() => ({ code: 1 }))).code === 0;
}

/** Builds the artifact into `dir` and returns a runner for it in an offline environment. */
async function offlineArtifact(dir: string) {
  const out = join(dir, "dist");
  const build = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(ROOT, "dist.ts"), "--out", out],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assertEquals(build.code, 0, dec.decode(build.stderr));
  const artifact = join(out, "backy.js");
  // The `#!` line finds `deno` on PATH: only the deno binary, under that name.
  const bin = join(dir, "bin");
  await Deno.mkdir(bin);
  await Deno.symlink(Deno.execPath(), join(bin, "deno"));
  const denoDir = join(dir, "deno-dir");
  await Deno.mkdir(denoDir);
  const unshare = await canUnshareNet();
  const deadProxy = "http://127.0.0.1:9";
  const env: Record<string, string> = {
    PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
    DENO_DIR: denoDir,
    HOME: dir,
    ...(unshare ? {} : {
      HTTP_PROXY: deadProxy,
      HTTPS_PROXY: deadProxy,
      http_proxy: deadProxy,
      https_proxy: deadProxy,
      NPM_CONFIG_REGISTRY: deadProxy,
    }),
  };
  const command = (args: string[]) => {
    const argv = unshare ? ["unshare", "-n", artifact, ...args] : [artifact, ...args];
    return new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    });
  };
  const run = async (args: string[]): Promise<Run> => {
    const r = await command(args).output();
    return {
      code: r.code,
      stdout: dec.decode(r.stdout),
      stderr: dec.decode(r.stderr),
      bytes: r.stdout,
    };
  };
  return { artifact, run, command, denoDir, unshare };
}

Deno.test("the artifact runs offline with only deno: backup, status, restore, scheduler", async (t) => {
  const dir = await tempDir("backy-dist-");
  try {
    const a = await offlineArtifact(dir);
    const src = join(dir, "src.img");
    await writeImage(src, [11, 0, 12, 13], 3 * 4 * 1024 * 1024 + 12345);
    const job = join(dir, "job");
    const ok = (r: Run, what: string) => assertEquals(r.code, 0, `${what}: ${r.stderr}${r.stdout}`);

    await t.step(
      `the build is one file (network cut by ${a.unshare ? "unshare -n" : "dead proxies"})`,
      async () => {
        const first = (await Deno.readTextFile(a.artifact)).split("\n", 1)[0];
        assertMatch(
          first,
          /^#!\/usr\/bin\/env -S deno run --no-config .*--allow-all --v8-flags=--max-semi-space-size=1$/,
        );
        assert(((await Deno.stat(a.artifact)).mode! & 0o111) !== 0, "executable");
        // It carries the data-path Worker's own bundle, which its Workers start from.
        const carried = (await Deno.readTextFile(a.artifact)).split("\n", 4)[3];
        const prefix = "globalThis.__backyWorkerBundle = ";
        assert(carried.startsWith(prefix), carried.slice(0, 80));
        const workerCode = JSON.parse(carried.slice(prefix.length).replace(/;$/, "")) as string;
        assertMatch(workerCode, /self\.postMessage\(\{\s*ready: true\s*\}\)/);
        assert(!workerCode.includes("commander"), "the Worker bundle leaves the CLI out");
        const v = await a.run(["--version"]);
        ok(v, "--version");
        assertEquals(v.stdout, "3.0.0\n");
      },
    );

    await t.step("init, backup (Workers), status", async () => {
      ok(await a.run(["-b", job, "init", "--backend", "chunked", "file", src]), "init");
      const b = await a.run(["-b", job, "backup", "daily"]);
      ok(b, "backup");
      assertIncludes(b.stdout, "Backup complete");
      const s = await a.run(["-b", job, "status"]);
      ok(s, "status");
      assertMatch(s.stdout, /^1 revisions containing [\d.]+ MiB data \(estimated\)$/m);
    });

    await t.step("restore to a file and to stdout", async () => {
      const out = join(dir, "restored.img");
      ok(await a.run(["-b", job, "restore", out]), "restore");
      assert(await filesEqual(out, src), "restored file equals the source");
      const r = await a.run(["-b", job, "restore", "-"]);
      ok(r, "restore -");
      assert(bytesEqual(r.bytes, await Deno.readFile(src)), "stdout carries the image");
    });

    await t.step({
      name: `a block device as source and as restore target${
        isRoot() ? "" : " (ignored: needs root for loop devices)"
      }`,
      ignore: !isRoot(),
      fn: async () => {
        // Deno refuses /dev to anything less than --allow-all: LVM volumes are everyday work.
        const image = join(dir, "dev-src.img");
        await writeImage(image, [21, 0, 22]);
        const attach = async (file: string) => {
          const l = await new Deno.Command("losetup", {
            args: ["--find", "--show", file],
            stdout: "piped",
          })
            .output();
          assertEquals(l.code, 0);
          return new TextDecoder().decode(l.stdout).trim();
        };
        const source = await attach(image);
        const target = join(dir, "dev-target.img");
        await Deno.writeFile(target, new Uint8Array(3 * 4 * 1024 * 1024));
        const targetDev = await attach(target);
        try {
          const devJob = join(dir, "devjob");
          ok(await a.run(["-b", devJob, "init", "--backend", "chunked", "file", source]), "init");
          ok(await a.run(["-b", devJob, "backup", "daily"]), "backup of a block device");
          ok(await a.run(["-b", devJob, "restore", "--force", targetDev]), "restore to a device");
          await new Deno.Command("sync", {}).output();
          assert(await filesEqual(target, image), "the device holds the image");
        } finally {
          await new Deno.Command("losetup", { args: ["-d", source] }).output();
          await new Deno.Command("losetup", { args: ["-d", targetDev] }).output();
        }
      },
    });

    await t.step("the scheduler runs backy itself from the artifact", async () => {
      const base = join(dir, "base");
      await Deno.mkdir(base);
      const config = join(dir, "backy.conf");
      await Deno.writeTextFile(
        config,
        `global:\n  base-dir: ${base}\n  status-interval: 1\n  telnet-addrs: 127.0.0.1\n` +
          `  telnet-port: ${freePort()}\nschedules:\n  s:\n    daily: {interval: 1d, keep: 3}\n` +
          `jobs:\n  vm1:\n    schedule: s\n    source: {type: file, filename: ${src}}\n`,
      );
      const daemon = a.command(["-l", join(dir, "scheduler.log"), "scheduler", "-c", config])
        .spawn();
      const jobDir = join(base, "vm1");
      let done = false;
      try {
        for (let i = 0; i < 200 && !done; i++) {
          await delay(100);
          try {
            done = (await Deno.readTextFile(join(jobDir, "backy.log"))).includes(
              "Backy operation complete.",
            );
          } catch { /* not yet */ }
        }
      } finally {
        daemon.kill("SIGTERM");
      }
      const out = await daemon.output();
      const log = await Deno.readTextFile(join(jobDir, "backy.log")).catch(() => "");
      assert(
        done,
        `the scheduled backup completed:\n${log}\n${new TextDecoder().decode(out.stderr)}`,
      );
      assertIncludes(log, "Backup complete");
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    });

    await t.step("nothing was downloaded into the empty DENO_DIR", async () => {
      const npm = join(a.denoDir, "npm");
      const names: string[] = [];
      try {
        for await (const e of Deno.readDir(npm)) names.push(e.name);
      } catch { /* never created */ }
      assertEquals(names, [], "no npm package fetched");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
