/** Shared helpers for black-box tests: run the real command on real files. */
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import YAML from "yaml";

export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const MOD = join(ROOT, "mod.ts");

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
}

/** Runs `backy ARGS` from source with the same Deno binary that runs the tests. */
export async function backy(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; stdin?: Uint8Array; wrap?: string[] } = {},
): Promise<Result> {
  const argv = [Deno.execPath(), "run", "--allow-all", "--quiet", MOD, ...args];
  const [cmd, ...rest] = [...(opts.wrap ?? []), ...argv];
  const child = new Deno.Command(cmd, {
    args: rest,
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    stdoutBytes: out.stdout,
  };
}

/** A fresh temporary directory, removed by the returned cleanup. */
export async function tempDir(prefix = "backy-test-"): Promise<string> {
  return await Deno.makeTempDir({ prefix });
}

/**
 * As root, runs a command without the capabilities that bypass file permissions, so
 * "permission denied" cases are real for root too.
 */
export const WITHOUT_DAC_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"];

export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** Deterministic pseudo-random bytes (xorshift), fast enough for hundreds of MiB. */
export function randomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  const words = new Uint32Array(out.buffer, 0, Math.floor(length / 4));
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < length; i++) out[i] = i & 0xff;
  return out;
}

/** Overwrites `length` bytes at `offset` in a file with pseudo-random data. */
export async function patchFile(path: string, offset: number, length: number, seed: number) {
  const f = await Deno.open(path, { write: true });
  try {
    await f.seek(offset, Deno.SeekMode.Start);
    const data = randomBytes(length, seed);
    let off = 0;
    while (off < data.length) off += await f.write(data.subarray(off));
  } finally {
    f.close();
  }
}

export async function filesEqual(a: string, b: string): Promise<boolean> {
  const r = await new Deno.Command("cmp", { args: ["-s", a, b] }).output();
  return r.code === 0;
}

/** Disk usage in KiB as `du` reports it (allocated blocks, not apparent size). */
export async function duKiB(path: string): Promise<number> {
  const r = await new Deno.Command("du", { args: ["-sk", path], stdout: "piped" }).output();
  return Number(new TextDecoder().decode(r.stdout).split(/\s/)[0]);
}

export async function sh(
  cmd: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

/**
 * A small XFS filesystem with reflink on a loop device (root only), for cow tests and
 * disk-full tests. Returns the mount point and an unmount function. mkfs.xfs (xfsprogs
 * 5.19+) refuses filesystems under 300 MiB, so smaller requests are an error here; to test
 * a nearly full filesystem, fill it (see `fillUp`).
 */
export async function xfsMount(
  sizeMiB: number,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  if (sizeMiB < 300) throw new Error(`xfsMount(${sizeMiB}): mkfs.xfs needs at least 300 MiB`);
  const base = await tempDir("backy-xfs-");
  const img = join(base, "fs.img");
  const dir = join(base, "mnt");
  await Deno.mkdir(dir);
  const f = await Deno.open(img, { create: true, write: true });
  await f.truncate(sizeMiB * 1024 * 1024);
  f.close();
  const mk = await sh("mkfs.xfs", ["-q", "-m", "reflink=1", img]);
  if (mk.code !== 0) throw new Error(`mkfs.xfs failed: ${mk.err}`);
  const mt = await sh("mount", ["-o", "loop", img, dir]);
  if (mt.code !== 0) throw new Error(`mount failed: ${mt.err}`);
  return {
    dir,
    cleanup: async () => {
      // A process that just ended may still hold files there for a moment ("target is busy").
      for (let tries = 0;; tries++) {
        const um = await sh("umount", [dir]);
        if (um.code === 0) break;
        if (tries === 50) throw new Error(`umount ${dir} failed: ${um.err.trim()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      await Deno.remove(base, { recursive: true });
    },
  };
}

/** Why a root-only test cannot run here, or undefined when it can. */
export async function xfsUnavailable(): Promise<string | undefined> {
  if (!isRoot()) return "needs root for a loop-mounted XFS filesystem";
  const r = await sh("sh", ["-c", "command -v mkfs.xfs && command -v losetup"]).catch(() => ({
    code: 1,
  }));
  if (r.code !== 0) return "needs mkfs.xfs (Debian package xfsprogs) and losetup";
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Assertions missing from node:assert (the tests use node:assert/strict; JSR is unreachable).

/** Byte-wise equality at memcmp speed. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

export function assertIncludes(text: string, part: string, message?: string): void {
  if (!text.includes(part)) {
    throw new Error(
      `${message ? message + ": " : ""}expected ${JSON.stringify(part)} in:\n${text}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Images, jobs and revisions for the black-box CLI tests.

export const MiB = 1024 * 1024;
/** backy's block size (design D3). */
export const BLOCK = 4 * MiB;

/** Throws with the command's output when it did not exit 0. */
export function expectOk(r: Result, what = "backy"): Result {
  if (r.code !== 0) {
    throw new Error(`${what} exited ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`);
  }
  return r;
}

/**
 * Writes a sparse image: one entry per 4 MiB block, a seed for pseudo-random data or 0 for
 * a hole. `size` (default: whole blocks) may cut the last block short or leave a hole tail.
 */
export async function writeImage(path: string, blocks: number[], size = blocks.length * BLOCK) {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await f.truncate(size);
    for (let i = 0; i < blocks.length; i++) {
      const len = Math.min(BLOCK, size - i * BLOCK);
      if (len <= 0) break;
      if (!blocks[i]) continue;
      await f.seek(i * BLOCK, Deno.SeekMode.Start);
      const data = randomBytes(len, blocks[i]);
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
    }
  } finally {
    f.close();
  }
}

/** `backy -b JOB init [--backend B] file SOURCE`, asserting success. */
export async function initJob(job: string, source: string, backend?: "cow" | "chunked") {
  const extra = backend ? ["--backend", backend] : [];
  expectOk(await backy(["-b", job, "init", ...extra, "file", source]), "init");
}

/** What a test needs from a `.rev` file, read with a plain YAML parser. */
export interface RevInfo {
  id: string;
  parent: string | null;
  duration?: number;
  tags: string[];
  trust?: string;
  error?: string;
  timestamp: string;
  bytesWritten: number;
  raw: Record<string, unknown>;
}

/** All revisions of a job (regular `.rev` files), oldest first. */
export async function revisions(job: string): Promise<RevInfo[]> {
  const out: RevInfo[] = [];
  for await (const e of Deno.readDir(job)) {
    if (!e.isFile || !e.name.endsWith(".rev")) continue;
    const raw = YAML.parse(await Deno.readTextFile(join(job, e.name))) as Record<string, unknown>;
    const stats = (raw.stats ?? {}) as Record<string, unknown>;
    out.push({
      id: String(raw.uuid),
      parent: (raw.parent as string | null) ?? null,
      duration: stats.duration as number | undefined,
      tags: (raw.tags as string[]) ?? [],
      trust: raw.trust as string | undefined,
      error: raw.error as string | undefined,
      timestamp: String(raw.timestamp),
      bytesWritten: Number(stats.bytes_written ?? 0),
      raw,
    });
  }
  return out.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
}

/** Names in a directory (not recursive), sorted. */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** Whether a path exists (a dangling symlink counts): the product's own helper. */
export { exists as fileExists } from "../src/util/fs.ts";

/** Apparent size in bytes. */
export async function sizeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).size;
}

/** KiB used on the filesystem holding `path` (df), the honest measure with reflinks. */
export async function dfUsedKiB(path: string): Promise<number> {
  await sh("sync", ["-f", path]);
  const r = await sh("df", ["-k", "--output=used", path]);
  return Number(r.out.trim().split("\n").at(-1));
}

/** Starts `backy ARGS` without waiting, for tests that signal it. */
export function spawnBacky(
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MOD, ...args],
    cwd: opts.cwd,
    env: opts.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * A `.rev` text edited the way an operator (or another tool) would, then given a valid
 * checksum again (the first line covers the rest: sha256 of it), so it reads as written.
 */
export function editRevText(text: string, edit: (body: string) => string): string {
  const body = edit(text.startsWith("checksum: ") ? text.slice(text.indexOf("\n") + 1) : text);
  return `checksum: sha256:${createHash("sha256").update(body).digest("hex")}\n${body}`;
}

/** The chunk file that stores `data` in a chunked job (named by the SHA-256 of the block). */
export function chunkOf(job: string, data: Uint8Array): string {
  const h = createHash("sha256").update(data).digest("hex");
  return join(job, "chunks", h.slice(0, 2), h);
}

/** Makes a file writable (completed revisions and chunks are read-only) and patches it. */
export async function corrupt(path: string, offset: number, bytes: Uint8Array) {
  const mode = (await Deno.stat(path)).mode ?? 0o440;
  await Deno.chmod(path, mode | 0o200);
  const f = await Deno.open(path, { write: true });
  try {
    await f.seek(offset, Deno.SeekMode.Start);
    await f.write(bytes);
  } finally {
    f.close();
  }
  await Deno.chmod(path, mode & 0o7777);
}

/** Leaves about `freeMiB` free on the filesystem at `dir` by allocating a filler file. */
export async function fillUp(dir: string, freeMiB: number): Promise<string> {
  const r = await sh("df", ["-k", "--output=avail", dir]);
  const availKiB = Number(r.out.trim().split("\n").at(-1));
  const filler = join(dir, "filler");
  const fillKiB = availKiB - freeMiB * 1024;
  if (fillKiB > 0) {
    const f = await sh("fallocate", ["-l", `${fillKiB}KiB`, filler]);
    if (f.code !== 0) throw new Error(`fallocate failed: ${f.err}`);
  }
  return filler;
}

/** One revision of a job directory as backy 2.1 wrote it. */
export interface LegacyRevision {
  id: string;
  /** Raw image content: copied from this file. */
  image: string;
  /** As 2.1 wrote it, e.g. `2015-09-01 07:06:47.123456+00:00`. */
  timestamp: string;
  parent: string | null;
  bytesWritten: number;
  /** Missing = incomplete. */
  duration?: number;
  tags: string[];
}

/**
 * Builds a 2.1 job directory by hand: `config` without backend, raw `<id>` images, `.rev`
 * files in 2.1's style (sorted keys, flow-style stats and tags), all 0440, and
 * `last`/`last.rev` pointing at `last` (if given). No index files.
 */
export async function legacyJob(
  job: string,
  source: string,
  revs: LegacyRevision[],
  last?: string,
): Promise<void> {
  // 0700, as the warning about directories readable by others asks (safety_test.ts).
  await Deno.mkdir(job, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(join(job, "config"), `type: file\nfilename: ${source}\n`);
  await Deno.chmod(join(job, "config"), 0o440);
  for (const r of revs) {
    const stats = r.duration === undefined
      ? `{bytes_written: ${r.bytesWritten}}`
      : `{bytes_written: ${r.bytesWritten}, duration: ${r.duration}}`;
    const text = `parent: ${r.parent ?? "null"}\nstats: ${stats}\ntags: [${r.tags.join(", ")}]\n` +
      `timestamp: ${r.timestamp}\nuuid: ${r.id}\n`;
    const ok = await sh("cp", ["--sparse=always", r.image, join(job, r.id)]);
    if (ok.code !== 0) throw new Error(ok.err);
    await Deno.writeTextFile(join(job, `${r.id}.rev`), text);
    await Deno.chmod(join(job, r.id), 0o440);
    await Deno.chmod(join(job, `${r.id}.rev`), 0o440);
  }
  if (last) {
    await Deno.symlink(last, join(job, "last"));
    await Deno.symlink(`${last}.rev`, join(job, "last.rev"));
  }
}

/**
 * A job in `dir` (`dir/job`, source `dir/src.img` of the given blocks) with one backup
 * tagged daily, and `dir/v1.img`, a copy of the source as backed up.
 */
export async function backedUpJob(
  dir: string,
  blocks: number[],
  backend: "cow" | "chunked",
): Promise<{ src: string; job: string; v1: string }> {
  const src = join(dir, "src.img");
  const job = join(dir, "job");
  await writeImage(src, blocks);
  await initJob(job, src, backend);
  expectOk(await backy(["-b", job, "backup", "daily"]));
  const v1 = join(dir, "v1.img");
  await Deno.copyFile(src, v1);
  return { src, job, v1 };
}
