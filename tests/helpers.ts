/** Shared helpers for black-box tests: run the real command on real files. */
import { join } from "node:path";

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
  opts: { cwd?: string; env?: Record<string, string>; stdin?: Uint8Array } = {},
): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MOD, ...args],
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
 * disk-full tests. Returns the mount point and an unmount function.
 */
export async function xfsMount(
  sizeMiB: number,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
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
      await sh("umount", [dir]);
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
