/**
 * Where an incremental backup's time goes (issue 14):
 *   deno run --allow-all bench/profile.ts
 * A BENCH_GIB (default 4) GiB mixed image (bench/peers.ts: 25 % holes, 40 % random, 35 %
 * text), one job per backend (PROFILE_BACKENDS, default chunked,cow; cow needs root for its
 * XFS loop mount, bench/xfs.ts), a first backup, then per case (cold cache as root, warm cache) 1 % of
 * the blocks rewritten and one incremental `backy backup` that is watched:
 *   - phases from backy's own log lines (start-up until "Creating revision", copy until
 *     "Data copied", verification until "Backup complete", then the exit),
 *   - CPU seconds per thread and phase from /proc/PID/task/TID/stat (every 20 ms), page
 *     faults per thread, bytes read from and written to disk (/proc/PID/io),
 *   - V8 garbage collection pauses of every isolate (`--v8-flags=--trace-gc`),
 *   - with `perf` installed (PROFILE_PERF=0 turns it off): `perf record -g -F 999
 *     -k CLOCK_MONOTONIC`, JavaScript frames named through `--perf-basic-prof`; samples split
 *     by phase (same clock) and sorted into categories by their leaf function and, in the
 *     kernel, by the system call or fault they serve. The deno binary is stripped: its
 *     SHA-256 code is recognised by the `sha256rnds2` instructions around the sample.
 * PROFILE_IMAGE=sparse uses bench/peers.ts's sparse image instead (200 MiB allocated).
 * BENCH_BACKY=artifact profiles backy as shipped (the checkout's dist/backy.js, built first).
 * Each report ends with a timeline: every log line backy printed, in seconds after the spawn.
 * BACKY_CHECKOUT=/path profiles another checkout. BENCH_DIR keeps the work files.
 */
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import {
  changedBlocks,
  dropCaches,
  GiB,
  isRoot,
  makeImage,
  MiB,
  mixedLayout,
  q,
  rewriteBlocks,
  sh,
  sparseLayout,
} from "./peers.ts";
import { mountXfs, type XfsMount } from "./xfs.ts";

const gib = Number(Deno.env.get("BENCH_GIB") ?? "4");
const backends = (Deno.env.get("PROFILE_BACKENDS") ?? "chunked,cow").split(",");
const sparse = Deno.env.get("PROFILE_IMAGE") === "sparse";
const checkout = resolve(
  Deno.env.get("BACKY_CHECKOUT") ?? new URL("..", import.meta.url).pathname,
);
const artifact = Deno.env.get("BENCH_BACKY") === "artifact";
/** What `deno run` runs: the checkout's source, or its artifact with the artifact's own flags. */
const program = artifact
  ? ["--no-config", "--no-lock", "--no-remote", "--no-npm", join(checkout, "dist", "backy.js")]
  : [join(checkout, "mod.ts")];
const work = Deno.env.get("BENCH_DIR") ??
  await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-profile-" });
const CLK_TCK = 100;
const FREQ = 999;

/** CLOCK_MONOTONIC in seconds, the clock `perf record -k CLOCK_MONOTONIC` stamps samples with. */
const libc = Deno.dlopen("libc.so.6", {
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
});
const ts = new BigInt64Array(2);
function monotonic(): number {
  libc.symbols.clock_gettime(1, new Uint8Array(ts.buffer));
  return Number(ts[0]) + Number(ts[1]) / 1e9;
}

const PHASES = ["start-up", "copy", "verify", "finish"] as const;
type Phase = typeof PHASES[number];

/** Phase boundaries (monotonic seconds) from the log lines of one backup. */
interface Marks {
  spawn: number;
  /** Every log line, with its arrival in monotonic seconds. */
  lines: [number, string][];
  creating?: number;
  copied?: number;
  complete?: number;
  exit?: number;
}

function phaseAt(m: Marks, t: number): Phase {
  if (m.creating === undefined || t < m.creating) return "start-up";
  if (m.copied === undefined || t < m.copied) return "copy";
  if (m.complete === undefined || t < m.complete) return "verify";
  return "finish";
}

function phaseLength(m: Marks, p: Phase): number {
  const edges = [m.spawn, m.creating, m.copied, m.complete, m.exit];
  const i = PHASES.indexOf(p);
  const a = edges[i], b = edges[i + 1];
  return a !== undefined && b !== undefined ? b - a : 0;
}

/** A thread's group: the main thread, a data-path Worker, V8's helpers, the I/O pool. */
function group(pid: number, tid: number, comm: string): string {
  if (tid === pid) return "main";
  if (comm.startsWith("worker-")) return "Workers";
  if (comm.startsWith("V8 ")) return "V8 helpers";
  if (comm.startsWith("tokio")) return "tokio pool";
  return "other";
}

interface ThreadStat {
  comm: string;
  ticks: number;
  minflt: number;
  majflt: number;
}

function readThreads(pid: number): Map<number, ThreadStat> {
  const out = new Map<number, ThreadStat>();
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const s = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, "latin1");
      const close = s.lastIndexOf(")");
      const comm = s.slice(s.indexOf("(") + 1, close);
      const f = s.slice(close + 2).split(" ");
      // Fields after the name, counted from 0: minflt 7, majflt 9, utime 11, stime 12.
      out.set(Number(t), {
        comm,
        ticks: Number(f[11]) + Number(f[12]),
        minflt: Number(f[7]),
        majflt: Number(f[9]),
      });
    } catch {
      // The thread ended between readdir and read.
    }
  }
  return out;
}

function readIo(pid: number): { read: number; write: number } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/io`, "latin1");
    const v = (k: string) => Number(new RegExp(`^${k}: (\\d+)`, "m").exec(s)?.[1] ?? 0);
    return { read: v("read_bytes"), write: v("write_bytes") };
  } catch {
    return undefined;
  }
}

/** Accumulated per (group, phase): CPU seconds, minor and major faults. */
class Acc {
  readonly cpu = new Map<string, number>();
  readonly minflt = new Map<string, number>();
  readonly majflt = new Map<string, number>();
  readonly io = new Map<Phase, { read: number; write: number }>();
  /** V8 GC pauses (all isolates, whole run): stdio buffers the trace, so no phase. */
  gcSeconds = 0;
  gcCount = 0;

  add(map: Map<string, number>, key: string, v: number) {
    map.set(key, (map.get(key) ?? 0) + v);
  }
}

/** Finds the pid of the deno process (perf's child, or the process itself). */
async function denoPid(pid: number, viaPerf: boolean): Promise<number | undefined> {
  if (!viaPerf) return pid;
  for (let i = 0; i < 200; i++) {
    try {
      const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "latin1").trim();
      if (kids) return Number(kids.split(" ")[0]);
    } catch {
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return undefined;
}

interface Watched {
  marks: Marks;
  acc: Acc;
  perfData?: string;
  pid: number;
}

/** Runs one backup, watching its threads; perf around it when asked. */
async function watchBackup(job: string, perfData?: string): Promise<Watched> {
  const denoArgs = [
    "run",
    "--allow-all",
    "--quiet",
    "--v8-flags=--trace-gc,--perf-basic-prof,--max-semi-space-size=1",
    ...program,
    "-b",
    job,
    "backup",
    "daily",
  ];
  const cmd = perfData
    ? [
      "perf",
      "record",
      "-q",
      "-g",
      "-F",
      String(FREQ),
      "-k",
      "CLOCK_MONOTONIC",
      "-o",
      perfData,
      "--",
      Deno.execPath(),
      ...denoArgs,
    ]
    : [Deno.execPath(), ...denoArgs];
  await sh("sync");
  const marks: Marks = { spawn: monotonic(), lines: [] };
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: work, // V8 writes isolate-*.log files into the current directory
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const acc = new Acc();
  const pid = (await denoPid(child.pid, !!perfData)) ?? child.pid;
  let done = false;
  const gcLine = /MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms(?: \(\+ ([\d.]+) ms in)?/;
  const reader = (async () => {
    let rest = "";
    const dec = new TextDecoder();
    for await (const chunk of child.stdout) {
      const now = monotonic();
      rest += dec.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        // V8's GC trace shares stdout and may end up on the same line as a log message.
        if (!gcLine.test(line) && line.trim()) marks.lines.push([now, line.trim()]);
        if (line.includes("Creating revision")) marks.creating ??= now;
        if (line.includes("Data copied")) marks.copied ??= now;
        if (line.includes("Backup complete")) marks.complete ??= now;
        const gc = gcLine.exec(line);
        if (gc) {
          acc.gcSeconds += (Number(gc[1]) + Number(gc[2] ?? 0)) / 1000;
          acc.gcCount++;
        }
      }
    }
  })();
  const stderr = new Response(child.stderr).text();
  // Sample thread CPU and process I/O; attribute each delta to the phase it ended in.
  let last = readThreads(pid);
  let lastIo = readIo(pid) ?? { read: 0, write: 0 };
  const sampler = (async () => {
    while (!done) {
      await new Promise((r) => setTimeout(r, 20));
      const now = readThreads(pid);
      const io = readIo(pid);
      const p = phaseAt(marks, monotonic());
      for (const [tid, s] of now) {
        const before = last.get(tid) ?? { ticks: 0, minflt: 0, majflt: 0 };
        const key = `${group(pid, tid, s.comm)}|${p}`;
        acc.add(acc.cpu, key, (s.ticks - before.ticks) / CLK_TCK);
        acc.add(acc.minflt, key, s.minflt - before.minflt);
        acc.add(acc.majflt, key, s.majflt - before.majflt);
      }
      // Threads that ended keep their last reading (their final slice is lost: <= 20 ms).
      for (const [tid, s] of now) last.set(tid, s);
      last = new Map([...last, ...now]);
      if (io) {
        const cur = acc.io.get(p) ?? { read: 0, write: 0 };
        acc.io.set(p, {
          read: cur.read + io.read - lastIo.read,
          write: cur.write + io.write - lastIo.write,
        });
        lastIo = io;
      }
    }
  })();
  const status = await child.status;
  marks.exit = monotonic();
  done = true;
  await sampler;
  await reader;
  if (!status.success) throw new Error(`backup failed: ${await stderr}`);
  return { marks, acc, perfData, pid };
}

/** File offsets of the deno binary's SHA-256 code: dense runs of sha256rnds2 (0F 38 CB). */
function shaRanges(binary: string): [number, number][] {
  const data = Deno.readFileSync(binary);
  const hits: number[] = [];
  for (let i = 0; i + 2 < data.length; i++) {
    if (data[i] === 0x0f && data[i + 1] === 0x38 && data[i + 2] === 0xcb) hits.push(i);
  }
  const ranges: [number, number][] = [];
  let start = 0;
  for (let k = 1; k <= hits.length; k++) {
    if (k === hits.length || hits[k] - hits[k - 1] > 256) {
      // A SHA-NI block function has 32 of them within about 1 KiB.
      if (k - start >= 16) ranges.push([hits[start] - 512, hits[k - 1] + 512]);
      start = k;
    }
  }
  return ranges;
}

type Frame = { sym: string; dso: string; ip: number };

/** The nearest JavaScript caller of a sample: backy's own function if any, else any. */
function caller(frames: Frame[]): string {
  const js = frames.filter((f) => /perf-\d+\.map/.test(f.dso)).map((f) => {
    const m = /^JS:[*^~+]?(\S*) (\S+?)(?::\d+)*$/.exec(f.sym);
    return m ? { name: m[1] || "(anonymous)", where: m[2] } : { name: f.sym, where: "" };
  });
  const own = js.find((f) => f.where.startsWith("file://"));
  if (!own) return js[0] ? js[0].name : "no JS caller";
  const name = `${own.name.replace(/^'/, "")} (${own.where.split("/").at(-1)})`;
  // The runtime's function in between says more (e.g. which zlib call).
  return js[0] !== own ? `${name} → ${js[0].name}` : name;
}

/**
 * Category of a perf sample: its leaf function, for the kernel what system call or fault
 * it serves, and for work done on behalf of JavaScript the nearest calling function.
 */
function category(frames: Frame[], sha: [number, number][]): string {
  const leaf = frames[0];
  if (!leaf) return "unknown";
  const kernel = (f: { dso: string }) => f.dso.includes("kernel");
  if (kernel(leaf)) {
    const syms = frames.filter(kernel).map((f) => f.sym).join(" ");
    if (/exc_page_fault|do_user_addr_fault/.test(syms)) {
      return `kernel: page faults, in ${caller(frames)}`;
    }
    if (/sys_(p)?read|sys_preadv/.test(syms)) {
      if (/iomap_dio|__iomap_dio_rw|blkdev_direct/.test(syms)) return "kernel: O_DIRECT reads";
      return "kernel: read() (page cache copy, readahead)";
    }
    if (/sys_(p)?write|sys_pwritev/.test(syms)) return "kernel: write()";
    if (/sys_fsync|sys_fdatasync|sys_sync/.test(syms)) return "kernel: fsync";
    if (/sys_(open|openat|newfstat|statx|newstat|rename|unlink|mkdir|chmod|fchmod)/.test(syms)) {
      return "kernel: open, stat, rename";
    }
    if (/sys_(munmap|mmap|madvise|mprotect|brk)/.test(syms)) return "kernel: mmap, munmap";
    if (/sys_(futex|sched_yield|epoll|nanosleep|clock_nanosleep)/.test(syms)) {
      return "kernel: futex, epoll";
    }
    if (/sys_(fallocate|ioctl|copy_file_range)/.test(syms)) return "kernel: fallocate, ioctl";
    if (/irq|softirq|apic|timer/.test(syms)) return "kernel: interrupts";
    return "kernel: other";
  }
  if (/perf-\d+\.map|\[JIT\]/.test(leaf.dso)) return "JavaScript (JIT code)";
  if (leaf.dso.includes("libc")) {
    if (/memmove|memcpy/.test(leaf.sym)) return `memcpy, in ${caller(frames)}`;
    if (/memset/.test(leaf.sym)) return `memset, in ${caller(frames)}`;
    return `libc ${leaf.sym.replace(/^__/, "")}, in ${caller(frames)}`;
  }
  if (leaf.dso.endsWith("/deno") || leaf.dso === "deno") {
    if (sha.some(([a, b]) => leaf.ip >= a && leaf.ip <= b)) return "SHA-256 (SHA-NI)";
    return `deno/V8 native (zstd, GC, builtins), in ${caller(frames)}`;
  }
  return `other: ${leaf.dso.split("/").at(-1)}`;
}

/** CPU seconds per (phase, thread group, category) from a perf.data file. */
async function perfProfile(w: Watched, sha: [number, number][]) {
  const out = await new Deno.Command("perf", {
    args: ["script", "-i", w.perfData!, "-F", "comm,tid,time,ip,sym,dso", "--no-demangle"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const result = new Map<string, number>();
  const head = /^\s*(.+?)\s+(\d+)\s+([\d.]+):\s*$/;
  for (const block of text.split("\n\n")) {
    const lines = block.split("\n").filter((l) => l.trim());
    if (!lines.length) continue;
    const h = head.exec(lines[0]);
    if (!h) continue;
    const [, comm, tid, time] = h;
    const frames = lines.slice(1).map((l) => {
      const m = /^\s*([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$/.exec(l);
      return m ? { ip: parseInt(m[1], 16), sym: m[2], dso: m[3] } : { ip: 0, sym: "?", dso: "?" };
    });
    const p = phaseAt(w.marks, Number(time));
    const key = `${p}|${group(w.pid, Number(tid), comm)}|${category(frames, sha)}`;
    result.set(key, (result.get(key) ?? 0) + 1 / FREQ);
  }
  return result;
}

const f1 = (x: number | undefined) => (x ?? 0).toFixed(2);

function report(title: string, w: Watched, perf?: Map<string, number>): string {
  const out: string[] = [`### ${title}`, ""];
  const groups = ["main", "Workers", "V8 helpers", "tokio pool", "other"];
  out.push(
    `| phase | wall s | ${groups.map((g) => `CPU s ${g}`).join(" | ")} | minor faults | ` +
      "major faults | disk read MiB | disk write MiB |",
    `|---|---|${groups.map(() => "---").join("|")}|---|---|---|---|`,
  );
  for (const p of PHASES) {
    const sum = (m: Map<string, number>) =>
      groups.reduce((s, g) => s + (m.get(`${g}|${p}`) ?? 0), 0);
    const io = w.acc.io.get(p) ?? { read: 0, write: 0 };
    out.push(
      `| ${p} | ${f1(phaseLength(w.marks, p))} | ${
        groups.map((g) => f1(w.acc.cpu.get(`${g}|${p}`))).join(" | ")
      } | ${sum(w.acc.minflt)} | ${sum(w.acc.majflt)} | ${(io.read / 2 ** 20).toFixed(0)} | ${
        (io.write / 2 ** 20).toFixed(0)
      } |`,
    );
  }
  out.push(
    "",
    `V8 garbage collection (all isolates, whole run): ${w.acc.gcCount} pauses, ${
      f1(w.acc.gcSeconds)
    } s.`,
    "",
  );
  if (perf) {
    const cats = [...new Set([...perf.keys()].map((k) => k.split("|")[2]))];
    const cols: [Phase, string][] = [
      ["copy", "main"],
      ["copy", "Workers"],
      ["verify", "main"],
      ["verify", "Workers"],
    ];
    const colTotal = (p: string, g: string) =>
      [...perf.entries()].filter(([k]) => k.startsWith(`${p}|${g}|`)).reduce(
        (s, [, v]) => s + v,
        0,
      );
    const rest = (c: string) =>
      [...perf.entries()].filter(([k]) => {
        const [p, g, cat] = k.split("|");
        return cat === c && !cols.some(([cp, cg]) => cp === p && cg === g);
      }).reduce((s, [, v]) => s + v, 0);
    const rows = cats.map((c) => ({
      c,
      v: cols.map(([p, g]) => perf.get(`${p}|${g}|${c}`) ?? 0),
      r: rest(c),
    })).sort((a, b) => b.v.reduce((x, y) => x + y, 0) + b.r - a.v.reduce((x, y) => x + y, 0) - a.r);
    out.push(
      `perf samples (${FREQ} Hz) as CPU seconds, by category:`,
      "",
      `| category | ${cols.map(([p, g]) => `${p}: ${g}`).join(" | ")} | other threads, phases |`,
      `|---|${cols.map(() => "---").join("|")}|---|`,
    );
    const small = { v: cols.map(() => 0), r: 0, n: 0 };
    for (const { c, v, r } of rows) {
      if (v.every((x) => x < 0.02) && r < 0.02) {
        v.forEach((x, i) => small.v[i] += x);
        small.r += r;
        small.n++;
      } else out.push(`| ${c} | ${v.map(f1).join(" | ")} | ${f1(r)} |`);
    }
    if (small.n) {
      out.push(
        `| ${small.n} smaller categories (< 0.02 s each) | ${small.v.map(f1).join(" | ")} | ${
          f1(small.r)
        } |`,
      );
    }
    const totalRest = [...perf.entries()].filter(([k]) => {
      const [p, g] = k.split("|");
      return !cols.some(([cp, cg]) => cp === p && cg === g);
    }).reduce((s, [, v]) => s + v, 0);
    out.push(
      `| total | ${cols.map(([p, g]) => f1(colTotal(p, g))).join(" | ")} | ${f1(totalRest)} |`,
      "",
    );
  }
  out.push("Timeline (seconds after the spawn, log lines as they arrived):", "", "```");
  for (const [t, line] of w.marks.lines) {
    out.push(`${(t - w.marks.spawn).toFixed(3).padStart(7)}  ${line.slice(0, 150)}`);
  }
  out.push(`${((w.marks.exit ?? 0) - w.marks.spawn).toFixed(3).padStart(7)}  (exit)`, "```", "");
  return out.join("\n");
}

const backy = (job: string, args: string) =>
  `${q(Deno.execPath())} run --allow-all --quiet --v8-flags=--max-semi-space-size=1 ${
    program.map(q).join(" ")
  } -b ${q(job)} ${args}`;

const havePerf = Deno.env.get("PROFILE_PERF") !== "0" &&
  (await new Deno.Command("bash", { args: ["-c", "command -v perf"], stdout: "null" }).output())
    .success;
let mounted: XfsMount | undefined;
try {
  if (artifact) await sh(`cd ${q(checkout)} && ${q(Deno.execPath())} task dist > /dev/null`);
  const layout = sparse ? sparseLayout(gib * GiB, 200 * MiB) : mixedLayout(gib * GiB);
  const image = join(work, "image.raw");
  makeImage(image, layout);
  const sha = havePerf ? shaRanges(Deno.execPath()) : [];
  const commit = new TextDecoder().decode(
    new Deno.Command("git", { args: ["-C", checkout, "log", "-1", "--format=%h"] }).outputSync()
      .stdout,
  ).trim();
  console.log(
    `## Profile of incremental backups, ${new Date().toISOString().slice(0, 16)} UTC\n\n` +
      `backy ${checkout} at ${commit}; ${gib} GiB ${
        sparse ? "sparse (200 MiB allocated)" : "mixed"
      } image, ${
        changedBlocks(layout, 1).length
      } blocks of 4 MiB rewritten before each backup; load average at start ${
        Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ")
      }. ${havePerf ? `perf: SHA-256 code found at ${sha.length} place(s) in deno.` : ""}\n`,
  );
  let step = 0;
  for (const backend of backends) {
    let dir = work;
    if (backend === "cow") {
      if (!isRoot) {
        console.log("cow: skipped (needs root for an XFS loop mount)\n");
        continue;
      }
      mounted = await mountXfs(join(work, "xfs.img"), join(work, "xfs"), (gib * 3 + 2) * GiB);
      dir = mounted.dir;
    }
    const job = join(dir, `job-${backend}`);
    await sh(`${backy(job, `init --backend ${backend} file ${q(image)}`)} > /dev/null`);
    await sh(`${backy(job, "backup daily")} > /dev/null`);
    for (const cold of isRoot ? [true, false] : [false]) {
      const blocks = changedBlocks(layout, ++step);
      rewriteBlocks(image, layout, blocks, step);
      if (cold) await dropCaches();
      else await sh(`cat ${q(image)} > /dev/null`);
      const perfData = havePerf ? join(work, `perf-${backend}-${cold}.data`) : undefined;
      const w = await watchBackup(job, perfData);
      const perf = perfData ? await perfProfile(w, sha) : undefined;
      await Deno.remove(`/tmp/perf-${w.pid}.map`).catch(() => {}); // --perf-basic-prof's
      console.log(report(`${backend}, ${cold ? "cold" : "warm"} cache`, w, perf));
    }
    await sh(`rm -rf ${q(job)}`);
    await mounted?.unmount();
    mounted = undefined;
  }
} finally {
  await mounted?.unmount().catch(() => {});
  if (!Deno.env.get("BENCH_DIR")) await Deno.remove(work, { recursive: true });
}
