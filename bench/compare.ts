/**
 * Regression check between two checkouts of backy, measured in one run, interleaved:
 *   deno run --allow-all bench/compare.ts BASE_CHECKOUT [NEW_CHECKOUT (default: this one)]
 * For each backend (BENCH_BACKENDS, default chunked,cow: chunked on the work directory's
 * filesystem; cow on an XFS loop mount with reflink, as root) and each round (BENCH_ROUNDS,
 * default 3; the checkouts' order alternates per round), on a BENCH_GIB (default 2) GiB
 * image: first backup, incremental after 1 % of the blocks changed, restore to a file (fsync
 * incl.), restore to /dev/null. BENCH_IMAGE=random (default: every 4th block zero, the rest
 * random) or mixed (bench/peers.ts's image: 25 % zero, 40 % random, 35 % text, which zstd
 * compresses). BENCH_COLD=1 (root) empties the page cache before each step; BENCH_BACKY=artifact
 * runs each checkout as shipped (dist/backy.js, built first). Reports medians,
 * min-max, new/base ratios and each scenario's peak RSS (/usr/bin/time). The physical
 * references of the same image are in bench/run.ts and bench/peers.ts.
 */
import { changeOnePercent, makeImage } from "./images.ts";
import {
  changedBlocks,
  dropCaches,
  makeImage as makeLayoutImage,
  mixedLayout,
  rewriteBlocks,
  timed as timedRss,
} from "./peers.ts";
import { join, resolve } from "node:path";
import { mountXfs } from "./xfs.ts";

const GiB = 1024 ** 3;
const size = Number(Deno.env.get("BENCH_GIB") ?? "2") * GiB;
const rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const mixed = Deno.env.get("BENCH_IMAGE") === "mixed";
const cold = Deno.env.get("BENCH_COLD") === "1" && Deno.uid() === 0;
const backends = (Deno.env.get("BENCH_BACKENDS") ?? "chunked,cow").split(",");
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

const peakRss = new Map<string, number>();

/** Wall seconds of `script` (after an untimed sync, and a cold cache with BENCH_COLD=1). */
async function timed(script: string, key: string): Promise<number> {
  if (cold) await dropCaches();
  const s = await timedRss(script, {}, join(work, "time.out"));
  peakRss.set(key, Math.max(peakRss.get(key) ?? 0, s.rssKiB / 1024));
  return s.wall;
}

/** BENCH_BACKY=artifact: each checkout as shipped (its dist/backy.js, built first). */
const artifact = Deno.env.get("BENCH_BACKY") === "artifact";

const backy = (which: keyof typeof checkouts, job: string, args: string) =>
  artifact
    ? `'${join(checkouts[which], "dist", "backy.js")}' -b '${job}' ${args}`
    : `'${Deno.execPath()}' run --allow-all --quiet --v8-flags=--max-semi-space-size=1 '${
      join(checkouts[which], "mod.ts")
    }' -b '${job}' ${args}`;

const results = new Map<string, number[]>();
const note = (key: string, s: number) => results.set(key, [...(results.get(key) ?? []), s]);

async function scenario(which: keyof typeof checkouts, dir: string, backend: string, r: number) {
  const image = join(dir, `image-${which}.raw`);
  await sh(`cp --sparse=always --reflink=never '${join(dir, "image.raw")}' '${image}' && sync`);
  const job = join(dir, `job-${which}`);
  await sh(`rm -rf '${job}' && ${backy(which, job, `init --backend ${backend} file '${image}'`)}`);
  const step = async (name: string, script: string) => {
    const key = `${backend} ${name}|${which}`;
    note(key, await timed(script, key));
  };
  await step("first backup", backy(which, job, "backup daily"));
  if (mixed) {
    const layout = mixedLayout(size);
    rewriteBlocks(image, layout, changedBlocks(layout, r + 1), r + 1);
  } else await changeOnePercent(image, size, 7 + r);
  await step("incremental 1 %", backy(which, job, "backup daily"));
  const target = join(dir, `restored-${which}.img`);
  await sh(`rm -f '${target}'; sync`);
  await step("restore to file", backy(which, job, `restore '${target}'`));
  await sh(`cmp '${target}' '${image}' && rm -f '${target}'`);
  await step("restore to /dev/null", `${backy(which, job, "restore -")} > /dev/null`);
  await sh(`rm -rf '${job}' '${image}'`);
}

async function backend(dir: string, name: string) {
  if (mixed) makeLayoutImage(join(dir, "image.raw"), mixedLayout(size));
  else await makeImage(join(dir, "image.raw"), size);
  for (let r = 0; r < rounds; r++) {
    const order: (keyof typeof checkouts)[] = r % 2 ? ["new", "base"] : ["base", "new"];
    for (const which of order) await scenario(which, dir, name, r);
  }
  await sh(`rm -f '${join(dir, "image.raw")}'`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  console.log(`compare: base ${checkouts.base}, new ${checkouts.new}`);
  if (artifact) {
    for (const dir of Object.values(checkouts)) {
      await sh(`cd '${dir}' && '${Deno.execPath()}' task dist`);
    }
    console.log("both run as the offline artifact (dist/backy.js)");
  }
  console.log(
    `${size / GiB} GiB ${mixed ? "mixed" : "random"} image, ${rounds} rounds, interleaved` +
      (cold ? ", cold cache" : ""),
  );
  if (backends.includes("chunked")) await backend(work, "chunked");
  if (!backends.includes("cow")) {
    // only what was asked for
  } else if (Deno.uid() === 0) {
    const xfs = await mountXfs(
      join(work, "xfs.img"),
      join(work, "xfs"),
      (Math.ceil((size * 5) / GiB) + 2) * GiB,
    );
    try {
      await backend(xfs.dir, "cow");
    } finally {
      await xfs.unmount();
    }
  } else console.log("cow on XFS: ignored (needs root for a loop mount)");
  console.log(
    "\n| scenario | base median (min-max) s | new median (min-max) s | new/base | peak RSS MiB base / new |\n|---|---|---|---|---|",
  );
  const names = [...new Set([...results.keys()].map((k) => k.split("|")[0]))];
  for (const name of names) {
    const b = results.get(`${name}|base`)!, n = results.get(`${name}|new`)!;
    const fmt = (xs: number[]) =>
      `${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`;
    const rss = (w: string) => (peakRss.get(`${name}|${w}`) ?? 0).toFixed(0);
    console.log(
      `| ${name} | ${fmt(b)} | ${fmt(n)} | ${(median(n) / median(b)).toFixed(2)} | ${
        rss("base")
      } / ${rss("new")} |`,
    );
  }
} finally {
  await Deno.remove(work, { recursive: true });
}
