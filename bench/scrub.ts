/**
 * Scrub throughput and budget (issue 9), in one run:
 *   deno run --allow-all bench/scrub.ts        # 2 GiB image (BENCH_GIB=1 for a quick run)
 * A chunked job (and, as root, a cow job on an XFS loop filesystem with reflink) holds one
 * revision of the image. Each round, interleaved, with the page cache dropped before each
 * (root): `backy verify --all` against `cat` of the same stored files and `openssl dgst
 * -sha256` of them (one process: the hash a single reader can do). Then the budget: `verify
 * --scrub --max-bytes B` alone and while a backup of another job runs, reporting the bytes
 * the scrub process read from disk (/proc/PID/io read_bytes via time's %I) against B.
 */
import { join } from "node:path";
import { makeImage } from "./images.ts";
import { mountXfs } from "./xfs.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const size = Number(Deno.env.get("BENCH_GIB") ?? "2") * GiB;
const rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const mod = new URL("../mod.ts", import.meta.url).pathname;
const isRoot = Deno.uid() === 0;
const work = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-scrub-bench-" });

interface Run {
  seconds: number;
  rssMiB: number;
  readMiB: number;
}

async function sh(script: string): Promise<string> {
  const r = await new Deno.Command("bash", { args: ["-c", script], stderr: "piped" }).output();
  const err = new TextDecoder().decode(r.stderr);
  if (r.code !== 0) throw new Error(`${script}: ${err}`);
  return new TextDecoder().decode(r.stdout);
}

async function dropCaches() {
  if (isRoot) await sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

/** Runs a shell command under /usr/bin/time: wall seconds, peak RSS, bytes read from disk. */
async function timed(script: string, okCodes = [0]): Promise<Run> {
  const r = await new Deno.Command("/usr/bin/time", {
    args: ["-f", "%e %M %I", "bash", "-c", script],
    stdout: "null",
    stderr: "piped",
  }).output();
  const lines = new TextDecoder().decode(r.stderr).trim().split("\n");
  if (!okCodes.includes(r.code)) throw new Error(`${script} failed: ${lines.join("\n")}`);
  const [s, rss, inputs] = lines.at(-1)!.split(" ").map(Number);
  return { seconds: s, rssMiB: rss / 1024, readMiB: (inputs * 512) / MiB };
}

const backy = (job: string, args: string) =>
  `'${Deno.execPath()}' run --allow-all --quiet '${mod}' -b '${job}' ${args}`;

async function makeJob(dir: string, backend: string, image: string): Promise<string> {
  const job = join(dir, `job-${backend}`);
  await sh(`${backy(job, `init file '${image}' --backend ${backend}`)} >/dev/null`);
  await sh(`${backy(job, "backup daily")} >/dev/null`);
  return job;
}

/** The stored files of the job: chunks, or the cow image. */
function storedFiles(job: string, backend: string): string {
  return backend === "chunked"
    ? `find '${job}/chunks' -type f -print0`
    : `find '${job}' -maxdepth 1 -type f -size +1M -print0`;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results: Record<string, Run[]> = {};
const note = (name: string, r: Run) => (results[name] ??= []).push(r);

try {
  const image = join(work, "image.raw");
  await makeImage(image, size);
  const dirs: { backend: string; dir: string; cleanup?: () => Promise<void> }[] = [
    { backend: "chunked", dir: work },
  ];
  if (isRoot) {
    const xfs = await mountXfs(
      join(work, "xfs.img"),
      join(work, "xfs"),
      (Math.ceil((size * 1.5) / GiB) + 1) * GiB,
    );
    dirs.push({ backend: "cow", dir: xfs.dir, cleanup: () => xfs.unmount() });
  }
  const jobs = [];
  for (const d of dirs) jobs.push({ ...d, job: await makeJob(d.dir, d.backend, image) });
  console.log(`scrub bench: ${size / GiB} GiB image (25 % zero), ${rounds} rounds, root=${isRoot}`);

  for (let r = 0; r < rounds; r++) {
    for (const { backend, job } of jobs) {
      const files = storedFiles(job, backend);
      const steps: [string, string][] = [
        [`${backend}: backy verify --all`, `${backy(job, "verify --all")} >/dev/null`],
        [`${backend}: cat of the stored files`, `${files} | xargs -0 cat >/dev/null`],
        [
          `${backend}: openssl dgst -sha256 of them`,
          `${files} | xargs -0 openssl dgst -sha256 >/dev/null`,
        ],
      ];
      // Interleaved: the order turns every round.
      const order = r % 2 ? [...steps].reverse() : steps;
      for (const [name, script] of order) {
        await dropCaches();
        note(name, await timed(script));
      }
    }
  }

  // The budget: one scrub run per case, after the recorded verifications are forgotten
  // (a fresh job each time would cost a backup; instead --period 1s makes all stale).
  const budget = 256 * MiB;
  for (const { backend, job } of jobs) {
    for (const load of [false, true]) {
      await sh(`rm -f '${job}/.scrub-cursor'`);
      await new Promise((res) => setTimeout(res, 1100)); // older than --period 1s
      await dropCaches();
      let other: Deno.ChildProcess | undefined;
      if (load) {
        // Load: a full backup of the same image into a second chunked job.
        const job2 = join(work, `load-${backend}`);
        await sh(`rm -rf '${job2}'; ${backy(job2, `init file '${image}' --backend chunked`)}`);
        other = new Deno.Command("bash", {
          args: ["-c", `${backy(job2, "backup daily")} >/dev/null`],
        }).spawn();
        await new Promise((res) => setTimeout(res, 500));
      }
      const run = await timed(
        `${backy(job, `verify --scrub --period 1s --max-bytes ${budget}`)} >/dev/null`,
      );
      if (other) await other.status;
      note(`${backend}: scrub --max-bytes 256M${load ? " during a backup" : ""}`, run);
    }
  }

  console.log("\n| | median s | MiB/s | vs cat | read from disk MiB | peak RSS MiB |");
  console.log("|---|---|---|---|---|---|");
  for (const [name, runs] of Object.entries(results)) {
    const s = median(runs.map((x) => x.seconds));
    const backend = name.split(":")[0];
    const cat = results[`${backend}: cat of the stored files`];
    const vsCat = cat && !name.includes("--max-bytes")
      ? `${(median(cat.map((x) => x.seconds)) / s).toFixed(2)}x`
      : "";
    const readMiB = median(runs.map((x) => x.readMiB));
    const mibs = name.includes("--max-bytes") ? readMiB / s : size / MiB / s;
    console.log(
      `| ${name} | ${s.toFixed(2)} (${runs.map((x) => x.seconds.toFixed(2)).join(", ")}) | ${
        mibs.toFixed(0)
      } | ${vsCat} | ${readMiB.toFixed(0)} | ${median(runs.map((x) => x.rssMiB)).toFixed(0)} |`,
    );
  }
  for (const { cleanup } of dirs) if (cleanup) await cleanup();
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
