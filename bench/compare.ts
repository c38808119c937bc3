/**
 * Regression check between two checkouts of backy, measured in one run, interleaved:
 *   deno run --allow-all bench/compare.ts BASE_CHECKOUT [NEW_CHECKOUT (default: this one)]
 * For each backend (chunked on the work directory's filesystem; cow on an XFS loop mount
 * with reflink, as root) and each round (BENCH_ROUNDS, default 3; the checkouts' order
 * alternates per round), on a BENCH_GIB (default 2) GiB image (every 4th block zero, the
 * rest random): first backup, incremental after 1 % of the blocks changed, restore to a
 * file (fsync incl.), restore to /dev/null. Reports medians, min-max and new/base ratios.
 * The physical references of the same image are in bench/run.ts and bench/peers.ts.
 */
import { changeOnePercent, makeImage } from "./images.ts";
import { join, resolve } from "node:path";

const GiB = 1024 ** 3;
const size = Number(Deno.env.get("BENCH_GIB") ?? "2") * GiB;
const rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
if (!Deno.args[0]) {
  console.error("usage: bench/compare.ts BASE_CHECKOUT [NEW_CHECKOUT]");
  Deno.exit(2);
}
const checkouts = {
  base: resolve(Deno.args[0]),
  new: resolve(Deno.args[1] ?? new URL("..", import.meta.url).pathname),
};
const work = await Deno.makeTempDir({ prefix: "backy-compare-" });

async function sh(script: string): Promise<void> {
  const r = await new Deno.Command("bash", {
    args: ["-c", script],
    stdout: "null",
    stderr: "piped",
  })
    .output();
  if (r.code !== 0) throw new Error(`${script}: ${new TextDecoder().decode(r.stderr)}`);
}

async function timed(script: string): Promise<number> {
  const t0 = performance.now();
  await sh(script);
  return (performance.now() - t0) / 1000;
}

const backy = (which: keyof typeof checkouts, job: string, args: string) =>
  `'${Deno.execPath()}' run --allow-all --quiet '${
    join(checkouts[which], "mod.ts")
  }' -b '${job}' ${args}`;

const results = new Map<string, number[]>();
const note = (key: string, s: number) => results.set(key, [...(results.get(key) ?? []), s]);

async function scenario(which: keyof typeof checkouts, dir: string, backend: string, r: number) {
  const image = join(dir, `image-${which}.raw`);
  await sh(`cp --sparse=always --reflink=never '${join(dir, "image.raw")}' '${image}' && sync`);
  const job = join(dir, `job-${which}`);
  await sh(`rm -rf '${job}' && ${backy(which, job, `init --backend ${backend} file '${image}'`)}`);
  note(`${backend} first backup|${which}`, await timed(backy(which, job, "backup daily")));
  await changeOnePercent(image, size, 7 + r);
  note(`${backend} incremental 1 %|${which}`, await timed(backy(which, job, "backup daily")));
  const target = join(dir, `restored-${which}.img`);
  await sh(`rm -f '${target}'; sync`);
  note(
    `${backend} restore to file|${which}`,
    await timed(backy(which, job, `restore '${target}'`)),
  );
  await sh(`cmp '${target}' '${image}' && rm -f '${target}'`);
  note(
    `${backend} restore to /dev/null|${which}`,
    await timed(`${backy(which, job, "restore -")} > /dev/null`),
  );
  await sh(`rm -rf '${job}' '${image}'`);
}

async function backend(dir: string, name: string) {
  await makeImage(join(dir, "image.raw"), size);
  for (let r = 0; r < rounds; r++) {
    const order: (keyof typeof checkouts)[] = r % 2 ? ["new", "base"] : ["base", "new"];
    for (const which of order) await scenario(which, dir, name, r);
  }
  await sh(`rm -f '${join(dir, "image.raw")}'`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  console.log(`compare: base ${checkouts.base}, new ${checkouts.new}`);
  console.log(`${size / GiB} GiB image, ${rounds} rounds, interleaved`);
  await backend(work, "chunked");
  if (Deno.uid() === 0) {
    const mnt = join(work, "xfs");
    await sh(
      `mkdir -p '${mnt}' && truncate -s ${Math.ceil((size * 5) / GiB) + 2}G '${work}/xfs.img' && ` +
        `mkfs.xfs -q -m reflink=1 '${work}/xfs.img' && mount -o loop '${work}/xfs.img' '${mnt}'`,
    );
    try {
      await backend(mnt, "cow");
    } finally {
      await sh(`umount '${mnt}'`);
    }
  } else console.log("cow on XFS: ignored (needs root for a loop mount)");
  console.log(
    "\n| scenario | base median (min-max) s | new median (min-max) s | new/base |\n|---|---|---|---|",
  );
  const names = [...new Set([...results.keys()].map((k) => k.split("|")[0]))];
  for (const name of names) {
    const b = results.get(`${name}|base`)!, n = results.get(`${name}|new`)!;
    const fmt = (xs: number[]) =>
      `${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
    console.log(`| ${name} | ${fmt(b)} | ${fmt(n)} | ${(median(n) / median(b)).toFixed(2)} |`);
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
