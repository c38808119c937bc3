/**
 * Sequential reads through `backy mount` (issue 13), against the other ways to get a
 * revision's bytes, in one run, interleaved, medians of 3 (root: FUSE and an XFS loop):
 *   deno run --allow-all bench/mount.ts          # 2 GiB image (BENCH_GIB=N to change)
 * BENCH_BACKY=artifact runs backy as shipped (dist/backy.js, built first) instead of mod.ts.
 * Image: 25 % zero blocks, 50 % random (incompressible), 25 % text-like (compressible).
 * Per round: `backy restore -r last - > /dev/null` and `dd if=MOUNT/last bs=4M` for a chunked
 * job (ext4) and a cow job (XFS with reflink), and `cat` of the cow image file. Every read
 * starts cold: a fresh mount per measurement (its page cache is new), the cow image and the
 * XFS loop's backing file dropped from the page cache before each read (chunks are read with
 * O_DIRECT anyway). Restore times include starting backy (~0.3 s); dd through a mount does not. Reports the
 * peak memory (VmHWM) of each mount process and the peak RSS of each restore.
 */
import { join } from "node:path";
import { mountXfs } from "./xfs.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const BLOCK = 4 * MiB;
const size = Number(Deno.env.get("BENCH_GIB") ?? "2") * GiB;
const mod = new URL("../mod.ts", import.meta.url).pathname;
const work = Deno.env.get("BENCH_DIR") ?? await Deno.makeTempDir({ prefix: "backy-bench-mount-" });
const ROUNDS = 3;

if (Deno.uid() !== 0) {
  console.error("bench/mount.ts needs root (FUSE mounts, an XFS loop filesystem)");
  Deno.exit(1);
}

const dec = new TextDecoder();

async function run(cmd: string[], opts: { ok?: boolean } = {}): Promise<string> {
  const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  if (r.code !== 0 && opts.ok !== false) {
    throw new Error(`${cmd.join(" ")} failed: ${dec.decode(r.stderr)}`);
  }
  return dec.decode(r.stdout);
}

/** BENCH_BACKY=artifact: backy as shipped, the checkout's dist/backy.js (built first). */
const artifact = Deno.env.get("BENCH_BACKY") === "artifact";
const backy = (...args: string[]) =>
  artifact
    ? [join(mod, "..", "dist", "backy.js"), ...args]
    : [Deno.execPath(), "run", "--allow-all", "--quiet", mod, ...args];

/** Seconds a shell command line takes, and its peak RSS in KiB (GNU time). */
async function timed(script: string): Promise<{ seconds: number; rssKiB: number }> {
  const t0 = performance.now();
  const r = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%M", "sh", "-c", script],
    stdout: "null",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - t0) / 1000;
  const err = dec.decode(r.stderr).trim().split("\n");
  if (r.code !== 0) throw new Error(`${script} failed: ${err.join("\n")}`);
  return { seconds, rssKiB: Number(err.at(-1)) };
}

/** The image: per 4 blocks one zero, two random, one text-like. */
async function makeImage(path: string) {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const buf = new Uint8Array(BLOCK);
  const text = new TextEncoder().encode(
    Array.from({ length: 200_000 }, (_, i) => `line ${i} of a log file, value=${i * 7919 % 1000}\n`)
      .join(""),
  ).subarray(0, BLOCK);
  for (let i = 0; i < size / BLOCK; i++) {
    const kind = i % 4;
    if (kind === 3) continue;
    if (kind === 2) {
      buf.set(text);
      buf[i % 4096] = i & 0xff; // distinct blocks, no deduplication
    } else {
      for (let o = 0; o < BLOCK; o += 65536) crypto.getRandomValues(buf.subarray(o, o + 65536));
    }
    await f.seek(i * BLOCK, Deno.SeekMode.Start);
    await f.write(buf);
  }
  await f.truncate(size);
  f.close();
}

/** Drops files' pages from the page cache (GNU dd's nocache with count=0). */
async function evict(...paths: string[]) {
  for (const path of paths) {
    await run(["dd", `if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  }
}

/** Peak resident memory of a process so far, KiB. */
async function peakKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

/** Mounts `job`, reads `last` with dd bs=4M, unmounts: dd's seconds and the mount's peak. */
async function throughMount(job: string, mp: string, before?: () => Promise<void>) {
  const out = await run(backy("-b", job, "mount", "-d", mp));
  const pid = Number(/\(pid (\d+),/.exec(out)![1]);
  try {
    await before?.();
    const t = await timed(`dd if=${mp}/last of=/dev/null bs=4M status=none`);
    return { seconds: t.seconds, rssKiB: await peakKiB(pid) };
  } finally {
    await run(backy("umount", mp));
    for (let i = 0; i < 100; i++) {
      try {
        await Deno.stat(`/proc/${pid}`);
        await new Promise((r) => setTimeout(r, 50));
      } catch {
        break;
      }
    }
  }
}

const src = join(work, "src.img");
const xfsImg = join(work, "xfs.img");
const xfsDir = join(work, "xfs");
const mp = join(work, "mnt");
await Deno.mkdir(xfsDir, { recursive: true });
await Deno.mkdir(mp, { recursive: true });
console.error(`bench/mount.ts: ${size / GiB} GiB image in ${work}`);
await makeImage(src);
if (artifact) await run([Deno.execPath(), "task", "--cwd", join(mod, ".."), "dist"]);
const chunkedJob = join(work, "chunked");
await run(backy("-b", chunkedJob, "init", "--backend", "chunked", "file", src));
await run(backy("-b", chunkedJob, "backup", "daily"));
const xfs = await mountXfs(xfsImg, xfsDir, Math.ceil(size * 1.3 + 400 * MiB));
try {
  const cowJob = join(xfsDir, "cow");
  await run(backy("-b", cowJob, "init", "--backend", "cow", "file", src));
  await run(backy("-b", cowJob, "backup", "daily"));
  const cowImage = (await run(backy("-b", cowJob, "find", "-r", "last"))).trim();

  const rows = new Map<string, { seconds: number[]; rss: number[] }>();
  const note = (name: string, t: { seconds: number; rssKiB: number }) => {
    if (!rows.has(name)) rows.set(name, { seconds: [], rss: [] });
    rows.get(name)!.seconds.push(t.seconds);
    rows.get(name)!.rss.push(t.rssKiB);
  };
  const restoreCmd = (job: string) =>
    `${backy("-b", job, "restore", "-r", "last", "-").join(" ")} > /dev/null`;
  for (let round = 1; round <= ROUNDS; round++) {
    console.error(`round ${round}/${ROUNDS}`);
    note("backy restore -r last - > /dev/null (chunked)", await timed(restoreCmd(chunkedJob)));
    note("dd if=MOUNT/last bs=4M (chunked)", await throughMount(chunkedJob, mp));
    await evict(cowImage, xfsImg);
    note("cat IMAGE > /dev/null (cow image file, XFS)", await timed(`cat ${cowImage} > /dev/null`));
    await evict(cowImage, xfsImg);
    note("backy restore -r last - > /dev/null (cow)", await timed(restoreCmd(cowJob)));
    note(
      "dd if=MOUNT/last bs=4M (cow)",
      await throughMount(cowJob, mp, () => evict(cowImage, xfsImg)),
    );
  }

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const lines = [
    `${"operation".padEnd(46)}  median  runs (s)        throughput  peak RSS`,
    `${"-".repeat(46)}  ------  --------------  ----------  --------`,
  ];
  for (const [name, r] of rows) {
    const m = median(r.seconds);
    lines.push(
      `${name.padEnd(46)}  ${m.toFixed(2).padStart(4)} s  ${
        r.seconds.map((s) => s.toFixed(2)).join(" ").padEnd(14)
      }  ${(size / 1e6 / m).toFixed(0).padStart(5)} MB/s  ${
        (Math.max(...r.rss) / 1024).toFixed(0).padStart(4)
      } MiB`,
    );
  }
  console.log(
    `${size / GiB} GiB image (25 % zero, 50 % random, 25 % text), ${ROUNDS} rounds interleaved; ` +
      "peak RSS: the mount process (VmHWM) for dd rows, the command itself otherwise",
  );
  console.log(lines.join("\n"));
} finally {
  await run(["umount", mp], { ok: false });
  await xfs.unmount().catch((e) => console.error(`umount: ${e}`));
  if (!Deno.env.get("BENCH_DIR")) await Deno.remove(work, { recursive: true });
}
