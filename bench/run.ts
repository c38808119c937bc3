/**
 * Throughput benchmark of the core (issue 2), measured in one run against `cat`, `cp` and
 * `sha256sum` on the same file:
 *   deno run --allow-all bench/run.ts            # 4 GiB image (BENCH_GIB=1 for a quick run)
 * Image: 25 % zero blocks, random data elsewhere. Reports first chunked backup, incremental
 * backup with 1 % of blocks changed (verification included), restores, and peak RSS.
 * As root it adds the cow backend on an XFS loop filesystem with reflink.
 */
import { changeOnePercent, makeImage } from "./images.ts";
import { join } from "node:path";
import { mountXfs } from "./xfs.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const size = Number(Deno.env.get("BENCH_GIB") ?? "4") * GiB;
const mod = new URL("../mod.ts", import.meta.url).pathname;
const work = Deno.env.get("BENCH_DIR") ?? await Deno.makeTempDir({ prefix: "backy-bench-" });

interface Timing {
  seconds: number;
  maxRssKiB: number;
}

async function timed(cmd: string[], opts: { stdout?: string } = {}): Promise<Timing> {
  const args = ["-f", "%e %M", ...cmd];
  const shell = opts.stdout
    ? ["sh", "-c", `/usr/bin/time -f '%e %M' "$@" > ${opts.stdout}`, "sh", ...cmd]
    : ["/usr/bin/time", ...args];
  const t0 = performance.now();
  const out = await new Deno.Command(shell[0], {
    args: shell.slice(1),
    stdout: "null",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - t0) / 1000;
  const err = new TextDecoder().decode(out.stderr).trim().split("\n");
  if (out.code !== 0) throw new Error(`${cmd.join(" ")} failed: ${err.join("\n")}`);
  const [, rss] = err.at(-1)!.split(" ");
  return { seconds, maxRssKiB: Number(rss) };
}

const backy = (
  ...args: string[]
) => [Deno.execPath(), "run", "--allow-all", "--quiet", mod, ...args];

async function sh(script: string): Promise<void> {
  const r = await new Deno.Command("sh", { args: ["-c", script] }).output();
  if (r.code !== 0) throw new Error(`${script}: ${new TextDecoder().decode(r.stderr)}`);
}

const mbps = (t: Timing) => (size / MiB / t.seconds).toFixed(0);
const rows: string[][] = [];
function report(name: string, t: Timing, ref?: Timing, refName?: string) {
  const ratio = ref ? `${(ref.seconds / t.seconds).toFixed(2)}x ${refName}` : "";
  rows.push([name, t.seconds.toFixed(2), mbps(t), (t.maxRssKiB / 1024).toFixed(0), ratio]);
  console.log(
    `${name.padEnd(46)} ${t.seconds.toFixed(2).padStart(7)} s ${mbps(t).padStart(6)} MiB/s  rss ${
      (t.maxRssKiB / 1024).toFixed(0).padStart(4)
    } MiB  ${ratio}`,
  );
}

async function benchBackend(
  dir: string,
  backend: string,
  image: string,
  ref: Record<string, Timing>,
) {
  const job = join(dir, `job-${backend}`);
  await sh(`rm -rf ${job}`);
  await new Deno.Command(backy("-b", job, "init", "--backend", backend, "file", image)[0], {
    args: backy("-b", job, "init", "--backend", backend, "file", image).slice(1),
    stdout: "null",
  }).output();
  const first = await timed(backy("-b", job, "backup", "full"));
  report(`${backend}: first backup (verify incl.)`, first, ref.sha256sum, "sha256sum");
  if (ref.zstd && backend === "chunked") {
    report(`  same, against zstd -1 -T2`, first, ref.zstd, "zstd -1 -T2");
  }
  const changed = await changeOnePercent(image, size, backend === "cow" ? 7 : 3);
  const incr = await timed(backy("-b", job, "backup", "incr"));
  report(
    `${backend}: incremental, ${changed} blocks changed (verify incl.)`,
    incr,
    ref.sha256sum,
    "sha256sum",
  );
  const target = join(dir, `restored-${backend}.img`);
  await sh(`rm -f ${target}; sync`);
  const restore = await timed([
    "sh",
    "-c",
    `${backy("-b", job, "restore", "-r", "0", target).join(" ")}`,
  ]);
  report(`${backend}: restore to file (fsync incl.)`, restore, ref.cpSync, "cp+sync");
  await sh(`cmp ${target} ${image}`);
  await sh(`rm -f ${target}`);
  const toNull = await timed(backy("-b", job, "restore", "-r", "0", "-"), { stdout: "/dev/null" });
  report(`${backend}: restore to stdout (/dev/null)`, toNull, ref.cat, "cat");
}

async function references(image: string, dir: string): Promise<Record<string, Timing>> {
  await sh(`cat ${image} > /dev/null`); // warm the page cache like the runs that follow
  const cat = await timed(["cat", image], { stdout: "/dev/null" });
  report("cat image > /dev/null", cat);
  const sha = await timed(["sha256sum", image]);
  report("sha256sum image", sha);
  const copy = join(dir, "copy.img");
  const cpSync = await timed(["sh", "-c", `cp --reflink=never ${image} ${copy} && sync ${copy}`]);
  report(`cp image (same fs) + sync`, cpSync);
  await sh(`rm -f ${copy}`);
  let zstd: Timing | undefined;
  if ((await new Deno.Command("sh", { args: ["-c", "command -v zstd"] }).output()).code === 0) {
    zstd = await timed(["zstd", "-q", "-1", "-T2", "-c", image], { stdout: "/dev/null" });
    report("zstd -1 -T2 image > /dev/null", zstd);
  }
  return { cat, sha256sum: sha, cpSync, ...(zstd ? { zstd } : {}) };
}

console.log(`backy benchmark: ${size / GiB} GiB image, work dir ${work}`);
const image = join(work, "image.raw");
await makeImage(image, size);
const ref = await references(image, work);
await benchBackend(work, "chunked", image, ref);

if (Deno.uid() === 0) {
  const xfsImg = join(work, "xfs.img");
  const mnt = join(work, "xfs");
  const xfs = await mountXfs(xfsImg, mnt, (Math.ceil(size * 3 / GiB) + 2) * GiB);
  try {
    const xfsImage = join(mnt, "image.raw");
    await sh(`cp --sparse=always ${image} ${xfsImage} && sync`);
    console.log("-- on XFS with reflink (loop device) --");
    const xref = await references(xfsImage, mnt);
    await benchBackend(mnt, "cow", xfsImage, xref);
  } finally {
    await xfs.unmount();
  }
} else {
  console.log("cow on XFS: ignored (needs root for a loop-mounted XFS filesystem)");
}
if (!Deno.env.get("BENCH_DIR")) await Deno.remove(work, { recursive: true });
