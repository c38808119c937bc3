/**
 * Ceph benchmark (issue 4), measured in one run against the plain `rbd` commands:
 *   deno run --allow-all bench/ceph.ts          # needs root and Debian's ceph packages
 * Starts its own single-node bluestore cluster (tests/ceph/cluster.sh) in
 * /tmp/backy-bench-ceph and purges it at the end. A 2 GiB image of random data (non-zero
 * everywhere; BENCH_GIB to change) is measured in BENCH_ROUNDS rounds (default 3; medians
 * reported, other work on the machine makes single runs noisy):
 *   - `rbd export POOL/IMAGE - > /dev/null` vs the first (full) backy backup,
 *   - 5 % of the image rewritten (whole 4 MiB objects at random offsets), then an
 *     incremental backup: its time and the bytes that crossed rbd (`bytes_received`),
 *   - `rbd import FILE POOL/NEW` of a raw file vs `backy restore -r 0 rbd:POOL/NEW`, both
 *     with the page cache dropped first (a restore reads the job disk; so does the
 *     reference), plus `rbd import` of a cached FILE for context.
 * For context it also measures what storing the image costs here before any backup logic:
 * `rbd export-diff` through a pipe, the fastest plain copy onto the job disk
 * (`rbd export | dd oflag=direct`), and `rbd export > /dev/null` while `dd` writes as many
 * bytes to the job disk at once: the OSD and the job directory share one disk (and two
 * cores) on a test machine, so that is the most any backup can reach here; and
 * `rbd export | openssl dgst -sha256`, the least any backup does with the data (hash it),
 * with standard tools.
 * Backends: chunked in a job directory on the local disk; cow on an XFS filesystem with
 * reflink on a loop device (direct I/O, so its pages are not cached twice).
 */
import { randomFillSync } from "node:crypto";
import { join } from "node:path";
import { mountXfs, type XfsMount } from "./xfs.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const OBJECT = 4 * MiB;
const size = Number(Deno.env.get("BENCH_GIB") ?? "2") * GiB;
const rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? "3");
const CHANGED = 0.05;
const root = new URL("..", import.meta.url).pathname;
const mod = join(root, "mod.ts");
const clusterScript = join(root, "tests/ceph/cluster.sh");
const CLUSTER_DIR = "/tmp/backy-bench-ceph";

if (Deno.uid() !== 0) {
  console.error("bench/ceph.ts needs root (a Ceph cluster of its own, an XFS loop mount)");
  Deno.exit(2);
}

const dec = new TextDecoder();

async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; stdin?: Uint8Array } = {},
): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
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
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

let env: Record<string, string> = {};

/** Seconds a bash command line takes (with the cluster env); fails loudly on errors. */
async function timed(script: string): Promise<number> {
  const t0 = performance.now();
  await run("bash", ["-c", `set -euo pipefail\n${script}`], { env });
  return (performance.now() - t0) / 1000;
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
const backy = (job: string, args: string) =>
  `${q(Deno.execPath())} run --allow-all --quiet ${q(mod)} -b ${q(job)} ${args}`;

/** The newest revision of a job: id and raw .rev text. */
async function newest(job: string): Promise<{ id: string; rev: string }> {
  let best: { id: string; rev: string; ts: string } | undefined;
  for await (const e of Deno.readDir(job)) {
    if (!e.isFile || !e.name.endsWith(".rev")) continue;
    const rev = await Deno.readTextFile(join(job, e.name));
    const ts = /^timestamp: (.*)$/m.exec(rev)?.[1] ?? "";
    if (!best || ts > best.ts) best = { id: e.name.slice(0, -4), rev, ts };
  }
  if (!best) throw new Error(`no revision in ${job}`);
  return best;
}

function stat(rev: string, key: string): string {
  return new RegExp(`^\\s+${key}: (.*)$`, "m").exec(rev)?.[1] ?? "?";
}

/** A diff v1 stream writing fresh random data over whole objects (for `rbd import-diff -`). */
function diffV1(offsets: number[], length: number): Uint8Array {
  const out = new Uint8Array(12 + offsets.length * (17 + length) + 1);
  const dv = new DataView(out.buffer);
  out.set(new TextEncoder().encode("rbd diff v1\n"));
  let at = 12;
  for (const off of offsets) {
    out[at] = 0x77; // 'w'
    dv.setBigUint64(at + 1, BigInt(off), true);
    dv.setBigUint64(at + 9, BigInt(length), true);
    randomFillSync(out.subarray(at + 17, at + 17 + length));
    at += 17 + length;
  }
  out[at] = 0x65; // 'e'
  return out;
}

interface Measured {
  /** Seconds of wall-clock time. */
  wall: number;
  /** CPU seconds of the command and its children (backy, its Workers, rbd, qemu-nbd). */
  client: number;
  /** CPU seconds the cluster's daemons (mon, OSD) spent meanwhile. */
  cluster: number;
}

let ticks = 100;

/** CPU seconds used so far by the daemons listed in the cluster's pids file. */
async function daemonCpu(): Promise<number> {
  let total = 0;
  const pids = await Deno.readTextFile(join(CLUSTER_DIR, "pids")).catch(() => "");
  for (const line of pids.split("\n")) {
    const pid = line.trim().split(/\s+/)[1];
    if (!pid) continue;
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    total += (Number(fields[11]) + Number(fields[12])) / ticks; // utime, stime
  }
  return total;
}

/** Runs a bash command line (cluster env) under /usr/bin/time; wall and CPU seconds. */
async function measure(script: string): Promise<Measured> {
  const out = join(work, "time.out");
  const c0 = await daemonCpu();
  const t0 = performance.now();
  await run("/usr/bin/time", [
    "-o",
    out,
    "-f",
    "%U %S",
    "bash",
    "-c",
    `set -euo pipefail\n${script}`,
  ], {
    env,
  });
  const wall = (performance.now() - t0) / 1000;
  const cluster = (await daemonCpu()) - c0;
  const [u, sys] = (await Deno.readTextFile(out)).trim().split("\n").at(-1)!.split(" ").map(Number);
  return { wall, client: u + sys, cluster };
}

/** Measurements per name, over the rounds. */
const times = new Map<string, Measured[]>();
const notes = new Map<string, string>();
const record = (what: string, m: Measured, note?: string) => {
  if (!times.has(what)) times.set(what, []);
  times.get(what)!.push(m);
  if (note) notes.set(what, note);
  console.error(
    `  ${what}: ${m.wall.toFixed(2)} s, CPU ${m.client.toFixed(1)} + ${m.cluster.toFixed(1)} s` +
      (note ? ` (${note})` : ""),
  );
};
const med = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const series = (what: string) => {
  const v = times.get(what);
  if (!v?.length) throw new Error(`no timing for ${what}`);
  return v;
};
const median = (what: string) => med(series(what).map((m) => m.wall));

const work = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-bench-ceph-" });
let xfs: XfsMount | undefined;
let clusterStarted = false;
try {
  console.error(`starting a bluestore cluster in ${CLUSTER_DIR} ...`);
  const started = await run("bash", [clusterScript, "start", CLUSTER_DIR], {
    env: { CEPH_TEST_OBJECTSTORE: "bluestore", CEPH_TEST_POOL: "rbd" },
  });
  clusterStarted = true;
  ticks = Number((await run("getconf", ["CLK_TCK"])).trim()) || 100;
  for (const line of started.split("\n")) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m && m[1] === "CEPH_CONF") env = { CEPH_CONF: m[2] };
  }
  if (!env.CEPH_CONF) throw new Error(`cluster.sh printed no CEPH_CONF:\n${started}`);
  const pool = "rbd";
  const image = `${pool}/bench`;

  // cow wants reflink: XFS on a loop device of a sparse file on the local disk
  xfs = await mountXfs(
    join(work, "xfs.img"),
    join(work, "xfs"),
    (Math.ceil((size * 3) / GiB) + 2) * GiB,
  );
  const xfsMnt = xfs.dir;

  console.error(`writing ${size / GiB} GiB of random data ...`);
  const raw = join(work, "raw.img");
  {
    const f = await Deno.open(raw, { write: true, create: true, truncate: true });
    const buf = new Uint8Array(16 * MiB);
    for (let done = 0; done < size; done += buf.length) {
      randomFillSync(buf);
      let o = 0;
      const n = Math.min(buf.length, size - done);
      while (o < n) o += await f.write(buf.subarray(o, n));
    }
    f.close();
  }
  await timed(`rbd import --no-progress ${raw} ${image}`);
  await timed(`rbd snap create --no-progress ${image}@bench-base`);

  const objects = size / OBJECT;
  const count = Math.round(objects * CHANGED);
  const sum = (spec: string) =>
    run("bash", ["-c", `rbd export --no-progress ${spec} - | sha256sum`], { env });
  const jobs = [
    { name: "chunked", label: "chunked, local disk" },
    { name: "cow", label: "cow, XFS reflink" },
  ];
  const received: Record<string, number[]> = { chunked: [], cow: [] };
  const identical: Record<string, boolean> = { chunked: true, cow: true };
  const EXPORT = "rbd export POOL/IMAGE - > /dev/null";
  const PIPE = "  rbd export-diff --whole-object @snap - | cat > /dev/null";
  const DISK = "  rbd export POOL/IMAGE - | dd of=FILE oflag=direct (job disk)";
  const FLOOR = "  rbd export > /dev/null while dd writes as much (O_DIRECT)";
  const HASH = "  rbd export POOL/IMAGE - | openssl dgst -sha256 (nothing stored)";
  const TMPFS = "  backy backup, full (chunked, job directory on tmpfs)";
  const IMPORT = "rbd import FILE POOL/NEW (FILE not cached)";
  const IMPORT_WARM = "  rbd import FILE POOL/NEW (FILE in page cache)";
  // Restores read their data from the job disk; so does the reference, from a cold cache.
  const cold = "sync; echo 3 > /proc/sys/vm/drop_caches";
  const mib = Math.floor(size / MiB);

  for (let round = 1; round <= rounds; round++) {
    console.error(`round ${round} of ${rounds}`);
    record(EXPORT, await measure(`rbd export --no-progress ${image} - > /dev/null`));
    record(
      PIPE,
      await measure(
        `rbd export-diff --no-progress --whole-object ${image}@bench-base - | cat > /dev/null`,
      ),
    );
    // What storing the image costs on this machine before any backup logic: the fastest
    // plain copy onto the job disk, and the disk alone doing the same amount of I/O.
    record(
      DISK,
      await measure(
        `rbd export --no-progress ${image} - | dd of=${work}/copy bs=4M iflag=fullblock ` +
          `oflag=direct status=none; rm -f ${work}/copy`,
      ),
    );
    // The least work a backup does with the data, done by standard tools: hash it (SHA-NI).
    record(HASH, await measure(`rbd export --no-progress ${image} - | openssl dgst -sha256`));
    // backy without a disk to wait for: what is left is CPU (two cores shared with the OSD).
    {
      const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "backy-bench-" });
      try {
        await timed(backy(dir, `init --backend chunked ceph-rbd ${image}`));
        record(TMPFS, await measure(backy(dir, "backup daily")));
        // Its snapshot must not become the diff base of the jobs below.
        await timed(`rbd snap rm --no-progress ${image}@backy-${(await newest(dir)).id}`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
    // The reference while the disk also takes the writes any backup must make: on a test
    // machine the OSD and the job directory share one disk (and two cores).
    record(
      FLOOR,
      await measure(
        `rbd export --no-progress ${image} - > /dev/null & ` +
          `dd if=/dev/zero of=${work}/zero bs=4M count=${mib / 4} oflag=direct status=none; ` +
          `wait; rm -f ${work}/zero`,
      ),
    );

    // One backend after the other: every backy job keeps only its own newest `backy-*`
    // snapshot, so two jobs of one image would delete each other's diff base.
    for (const job of jobs) {
      const dir = job.name === "cow"
        ? join(xfsMnt, `cow-${round}`)
        : join(work, `chunked-${round}`);
      await timed(backy(dir, `init --backend ${job.name} ceph-rbd ${image}`));
      record(`backy backup, full (${job.label})`, await measure(backy(dir, "backup daily")));
      // 5 % changed: whole 4 MiB objects of fresh random data at distinct random offsets
      const picked = new Set<number>();
      while (picked.size < count) picked.add(Math.floor(Math.random() * objects));
      const offsets = [...picked].sort((a, b) => a - b).map((i) => i * OBJECT);
      await run("rbd", ["import-diff", "--no-progress", "-", image], {
        env,
        stdin: diffV1(offsets, OBJECT),
      });
      const inc = await measure(backy(dir, "backup daily"));
      const rev = await newest(dir);
      const bytes = Number(stat(rev.rev, "bytes_received"));
      received[job.name].push(bytes);
      record(
        `backy backup, incremental (${job.label})`,
        inc,
        `mode ${stat(rev.rev, "mode")}, ${(bytes / MiB).toFixed(0)} MiB over rbd`,
      );
      const want = round === 1 ? await sum(`${image}@backy-${rev.id}`) : undefined;

      const target = `${pool}/restored-${job.name}`;
      await timed(cold);
      record(
        `backy restore -r 0 rbd:POOL/NEW (${job.label})`,
        await measure(backy(dir, `restore -r 0 rbd:${target}`)),
      );
      if (want !== undefined) identical[job.name] = (await sum(target)) === want;
      await timed(`rbd rm --no-progress ${target}`);
      await timed(cold);
      record(IMPORT, await measure(`rbd import --no-progress ${raw} ${pool}/imported`));
      await timed(`rbd rm --no-progress ${pool}/imported`);
      await timed(`cat ${raw} > /dev/null`);
      record(IMPORT_WARM, await measure(`rbd import --no-progress ${raw} ${pool}/imported`));
      await timed(`rbd rm --no-progress ${pool}/imported`);
      if (round < rounds) await Deno.remove(dir, { recursive: true });
    }
  }

  // ------------------------------------------------------------------ report
  const order = [
    EXPORT,
    PIPE,
    DISK,
    FLOOR,
    HASH,
    TMPFS,
    ...jobs.flatMap((j) => [
      `backy backup, full (${j.label})`,
      `backy backup, incremental (${j.label})`,
    ]),
    IMPORT,
    IMPORT_WARM,
    ...jobs.map((j) => `backy restore -r 0 rbd:POOL/NEW (${j.label})`),
  ];
  const lines: string[][] = [[
    "operation",
    "median",
    "runs (s)",
    "throughput",
    "CPU s: client",
    "cluster",
    "note",
  ]];
  for (const what of order) {
    const m = median(what);
    const bytes = what.includes("incremental") ? count * OBJECT : size;
    lines.push([
      what,
      `${m.toFixed(2)} s`,
      series(what).map((t) => t.wall.toFixed(1)).join(" "),
      `${(bytes / 1e6 / m).toFixed(0)} MB/s`,
      med(series(what).map((t) => t.client)).toFixed(1),
      med(series(what).map((t) => t.cluster)).toFixed(1),
      notes.get(what) ?? "",
    ]);
  }
  const table = (rows: string[][]) => {
    const w = rows[0].map((_, i) => Math.max(...rows.map((l) => l[i].length)));
    const fmt = (l: string[]) => l.map((c, i) => c.padEnd(w[i])).join("  ").trimEnd();
    console.log(fmt(rows[0]));
    console.log(w.map((n) => "-".repeat(n)).join("  "));
    for (const l of rows.slice(1)) console.log(fmt(l));
  };
  console.log(
    `\n${size / GiB} GiB image of random data, bluestore test cluster, ` +
      `${navigator.hardwareConcurrency} cores, ${rounds} rounds (incremental: ` +
      `${count} of ${objects} objects = ${((count / objects) * 100).toFixed(1)} % changed)\n`,
  );
  table(lines);

  const verdict = (ok: boolean) => (ok ? "ok" : "MISSED");
  const x = (a: number) => `${a.toFixed(2)}x`;
  const checks: string[][] = [["target", "measured", "goal", ""]];
  for (const j of jobs) {
    const full = median(`backy backup, full (${j.label})`);
    const inc = median(`backy backup, incremental (${j.label})`);
    const rest = median(`backy restore -r 0 rbd:POOL/NEW (${j.label})`);
    const maxRecv = Math.max(...received[j.name]);
    checks.push(
      [
        `full backup vs rbd export (${j.name})`,
        x(median(EXPORT) / full),
        ">= 0.80x",
        verdict(median(EXPORT) / full >= 0.8),
      ],
      [
        `  same, vs rbd export | dd onto the job disk (${j.name})`,
        x(median(DISK) / full),
        "(context)",
        "",
      ],
      [
        `  best any backup can reach here: rbd export / (same + writes)`,
        x(median(EXPORT) / median(FLOOR)),
        "(context)",
        "",
      ],
      [
        `  rbd export | openssl dgst -sha256 vs rbd export`,
        x(median(EXPORT) / median(HASH)),
        "(context)",
        "",
      ],
      [
        `  backy full backup into tmpfs vs rbd export`,
        x(median(EXPORT) / median(TMPFS)),
        "(context)",
        "",
      ],
      [
        `incremental: bytes over rbd / image (${j.name})`,
        `${((maxRecv / size) * 100).toFixed(1)} %`,
        "<= ~5 %",
        verdict(maxRecv / size <= CHANGED * 1.05),
      ],
      [
        `incremental time / rbd export time (${j.name})`,
        x(inc / median(EXPORT)),
        "well under 1x",
        verdict(inc / median(EXPORT) <= 0.5),
      ],
      [
        `restore into Ceph vs rbd import, both from disk (${j.name})`,
        x(median(IMPORT) / rest),
        ">= 0.80x",
        verdict(median(IMPORT) / rest >= 0.8),
      ],
      [
        `  same, vs rbd import of a cached FILE (${j.name})`,
        x(median(IMPORT_WARM) / rest),
        "(context)",
        "",
      ],
      [
        `restored image = backed-up snapshot (${j.name})`,
        identical[j.name] ? "identical" : "DIFFERENT",
        "identical",
        verdict(identical[j.name]),
      ],
    );
  }
  console.log("");
  table(checks);
} finally {
  await xfs?.unmount().catch((e) => console.error(`umount: ${e}`));
  await Deno.remove(work, { recursive: true }).catch(() => {});
  if (clusterStarted) {
    await run("bash", [clusterScript, "purge", CLUSTER_DIR]).catch((e) =>
      console.error(`purge failed: ${e}`)
    );
  }
}
