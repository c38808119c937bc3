/**
 * backy against its peers (issue 14), in one run, on the same images and scenarios:
 *   deno run --allow-all bench/peers.ts
 * Participants: backy chunked (job directory on the work directory's filesystem), backy cow
 * (job directory on an XFS loop mount with reflink; root only), borg (`borg init -e none`,
 * `borg create --compression lz4`, its default) and restic (encrypted as always, zstd
 * `auto`, a fixed password file). borg and restic come from the Debian packages
 * `borgbackup` and `restic`: installed with apt-get when missing (root), else skipped with a
 * message. Physical references in the same run: `cat`, `openssl dgst -sha256`, two
 * `openssl dgst -sha256` processes hashing the two halves at once (the floor of any backup
 * that must read and hash every byte), `cp` + sync.
 *
 * Rounds (BENCH_ROUNDS, default 3) are interleaved: in every round each participant runs its
 * scenarios once, and the order of participants rotates per round. Reported: medians with
 * min-max, peak RSS (`/usr/bin/time -f %M`), stored bytes, ratios, the targets of issue 14.
 * Each timed backup is verified afterwards (the newest backup restored to a stream and its
 * SHA-256 compared with the image's) and each restore is compared with `cmp`; a mismatch
 * stops the run.
 *
 * Sections, each with its own images (created, used by every participant, removed):
 *   main: BENCH_GIB (default 4) GiB raw image, 25 % zero blocks (holes), 40 % random, 35 %
 *     compressible text, deterministic. First backup (cold cache), incremental after 1 % of
 *     the 4 MiB blocks were rewritten, cold cache and warm cache, restore of the newest
 *     backup to a file (cold cache, fsync incl.).
 *   sweep (BENCH_SWEEP, default 1,4,8 GiB; 0 skips): the incremental backups again at each
 *     size (the main size is taken from the main section).
 *   sparse (BENCH_SPARSE, default 8 GiB; 0 skips): an image of that size with 200 MiB
 *     allocated; first backup and incrementals after rewriting 1 % of the allocated blocks.
 * Cold cache = `sync; echo 3 > /proc/sys/vm/drop_caches` (root); without root the cold rows
 * and cow are skipped. BACKY_CHECKOUT=/path picks the backy checkout to run (default: this
 * one), so one harness measures before and after; BENCH_BACKY=artifact runs it as shipped
 * (dist/backy.js, built first) instead of from source. BENCH_TOOLS=backy-chunked,borg,... limits
 * the participants; BENCH_DIR picks the work directory (default: a new one in /var/tmp).
 */
import { createCipheriv, createHash } from "node:crypto";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { mountXfs, type XfsMount } from "./xfs.ts";

/** Bytes in a MiB. */
export const MiB = 1024 ** 2;
/** Bytes in a GiB. */
export const GiB = 1024 ** 3;
/** backy's block size, and the unit in which the images are made and changed. */
export const BLOCK = 4 * MiB;

// ---------------------------------------------------------------------------------------
// Images: deterministic content, so every participant and every run sees the same bytes.

/** What a 4 MiB block of a test image holds. */
export type BlockKind = "zero" | "random" | "text";

/** What each block of an image holds; zero blocks are holes. */
export interface Layout {
  size: number;
  kind(block: number): BlockKind;
  /** How many blocks one "1 %" change rewrites. */
  changeCount: number;
  /** Bytes that are not holes. */
  allocated: number;
}

const blockCount = (size: number) => Math.ceil(size / BLOCK);

/** Repeating 20-block pattern: 5 zero (25 %), 8 random (40 %), 7 text (35 %). */
const PATTERN = "RTZRTRZTRTRZRTTRZRTZ";

function layoutOf(size: number, kind: (i: number) => BlockKind, changeCount: number): Layout {
  let allocated = 0;
  for (let i = 0; i < blockCount(size); i++) {
    if (kind(i) !== "zero") allocated += Math.min(BLOCK, size - i * BLOCK);
  }
  return { size, kind, changeCount, allocated };
}

/** The mixed image: 25 % zero blocks, 40 % random, 35 % text; 1 % of all blocks change. */
export function mixedLayout(size: number): Layout {
  const kinds: Record<string, BlockKind> = { Z: "zero", R: "random", T: "text" };
  return layoutOf(
    size,
    (i) => kinds[PATTERN[i % PATTERN.length]],
    Math.max(1, Math.round(blockCount(size) * 0.01)),
  );
}

/** Mostly holes: `allocated` bytes of random and text blocks spread evenly over `size`. */
export function sparseLayout(size: number, allocated: number): Layout {
  const blocks = blockCount(size);
  const data = Math.max(1, Math.round(allocated / BLOCK));
  const step = blocks / data;
  const isData = new Set<number>();
  for (let k = 0; k < data; k++) isData.add(Math.floor(k * step + step / 2));
  return layoutOf(
    size,
    (i) => isData.has(i) ? (i % 2 ? "text" : "random") : "zero",
    Math.max(1, Math.round(data * 0.01)),
  );
}

/** mulberry32: a small seeded PRNG (32-bit state) for the text generator. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** 4,096 made-up words, letters drawn with roughly English frequencies. */
const WORDS: Uint8Array[] = (() => {
  const r = prng(1);
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  const words: Uint8Array[] = [];
  for (let w = 0; w < 4096; w++) {
    const len = 2 + (r() % 9);
    const word = new Uint8Array(len);
    for (let c = 0; c < len; c++) {
      const x = r() / 2 ** 32;
      word[c] = letters.charCodeAt(Math.floor(x * x * letters.length));
    }
    words.push(word);
  }
  return words;
})();

/** Text-like bytes: words (Zipf-like frequencies), punctuation, lines of ~70 characters. */
function textBlock(out: Uint8Array, seed: number): void {
  const r = prng(seed);
  const end = out.length;
  let pos = 0;
  let line = 0;
  while (pos < end) {
    const x = r() / 2 ** 32;
    const word = WORDS[Math.floor(x * x * x * WORDS.length)];
    for (let c = 0; c < word.length && pos < end; c++) out[pos++] = word[c];
    line += word.length + 1;
    const s = r() & 31;
    if (s < 2 && pos < end) out[pos++] = s === 0 ? 46 : 44; // . ,
    if (pos < end) out[pos++] = line > 70 ? 10 : 32; // newline, space
    if (line > 70) line = 0;
  }
}

const AES_KEY = createHash("sha256").update("backy peers benchmark").digest().subarray(0, 16);
let zeroBlock = new Uint8Array(BLOCK);

/** Incompressible bytes: the AES-128-CTR key stream for (block, seed). */
function randomBlock(out: Uint8Array, block: number, seed: number): void {
  const iv = new Uint8Array(16);
  const dv = new DataView(iv.buffer);
  dv.setUint32(0, seed);
  dv.setUint32(4, block);
  if (zeroBlock.length < out.length) zeroBlock = new Uint8Array(out.length);
  out.set(createCipheriv("aes-128-ctr", AES_KEY, iv).update(zeroBlock.subarray(0, out.length)));
}

/** Block `i`'s content in version `seed` (0: the original image). */
export function fillBlock(out: Uint8Array, kind: BlockKind, block: number, seed: number): void {
  if (kind === "random") randomBlock(out, block, seed);
  else if (kind === "text") textBlock(out, (block * 7919 + seed * 1_000_003 + 17) >>> 0);
  else out.fill(0);
}

function pwriteAll(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, data.length - done, position + done);
  }
}

/** Writes the image (zero blocks stay holes). */
export function makeImage(path: string, layout: Layout): void {
  const fd = fs.openSync(path, "w", 0o600);
  try {
    const buf = new Uint8Array(BLOCK);
    for (let i = 0; i < blockCount(layout.size); i++) {
      const kind = layout.kind(i);
      if (kind === "zero") continue;
      const data = buf.subarray(0, Math.min(BLOCK, layout.size - i * BLOCK));
      fillBlock(data, kind, i, 0);
      pwriteAll(fd, data, i * BLOCK);
    }
    fs.ftruncateSync(fd, layout.size);
  } finally {
    fs.closeSync(fd);
  }
}

/** The blocks change number `step` (1, 2, ...) rewrites: spread out, a different set per step. */
export function changedBlocks(layout: Layout, step: number): number[] {
  const data: number[] = [];
  for (let i = 0; i < blockCount(layout.size); i++) if (layout.kind(i) !== "zero") data.push(i);
  const n = Math.min(layout.changeCount, data.length);
  const phase = (step * 0.6180339887) % 1;
  return Array.from({ length: n }, (_, k) => data[Math.floor((k + phase) * data.length / n)]);
}

/**
 * Rewrites the given blocks in place with version `seed` of their content (0 restores the
 * original), like a guest rewriting whole 4 MiB regions.
 */
export function rewriteBlocks(path: string, layout: Layout, blocks: number[], seed: number) {
  const fd = fs.openSync(path, "r+");
  try {
    const buf = new Uint8Array(BLOCK);
    for (const i of blocks) {
      const data = buf.subarray(0, Math.min(BLOCK, layout.size - i * BLOCK));
      fillBlock(data, layout.kind(i), i, seed);
      pwriteAll(fd, data, i * BLOCK);
    }
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------
// Processes, timing, caches.

const dec = new TextDecoder();
/** Cold-cache rows and the XFS loop mount need root. */
export const isRoot = Deno.uid() === 0;

/** Runs a bash script (`set -euo pipefail`); its stdout; throws with stderr on failure. */
export async function sh(script: string, env: Record<string, string> = {}): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: ["-c", `set -euo pipefail\n${script}`],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`failed (${out.code}): ${script}\n${dec.decode(out.stderr).trim()}`);
  }
  return dec.decode(out.stdout);
}

/** `s` quoted for bash. */
export const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** One timed run: wall seconds, peak RSS (KiB, largest process), CPU seconds (user+system). */
export interface Sample {
  wall: number;
  rssKiB: number;
  cpu: number;
}

/** Times a bash script under /usr/bin/time after flushing dirty pages (untimed). */
export async function timed(
  script: string,
  env: Record<string, string> = {},
  timeFile: string,
): Promise<Sample> {
  await sh("sync");
  const t0 = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args: ["-o", timeFile, "-f", "%M %U %S", "bash", "-c", `set -euo pipefail\n${script}`],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  const wall = (performance.now() - t0) / 1000;
  if (!out.success) {
    throw new Error(`failed (${out.code}): ${script}\n${dec.decode(out.stderr).trim()}`);
  }
  const [rss, user, sys] = (await Deno.readTextFile(timeFile)).trim().split("\n").at(-1)!
    .split(" ").map(Number);
  return { wall, rssKiB: rss, cpu: user + sys };
}

/** Empties the page cache (root), so the next command reads from disk. */
export async function dropCaches(): Promise<void> {
  await sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

/** Reads files once so they are in the page cache. */
export async function warm(...paths: string[]): Promise<void> {
  await sh(`cat ${paths.map(q).join(" ")} > /dev/null`);
}

/** SHA-256 (hex) of what a bash pipeline writes to stdout. */
async function streamHash(script: string, env: Record<string, string> = {}): Promise<string> {
  const out = await sh(`${script} | openssl dgst -sha256 -r`, env);
  return out.trim().split(/\s+/)[0];
}

async function have(cmd: string): Promise<boolean> {
  return (await new Deno.Command("bash", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
    .output()).success;
}

/** Whether `cmd` is there, installing Debian package `pkg` with apt-get when it is not. */
async function ensureTool(cmd: string, pkg: string): Promise<boolean> {
  if (await have(cmd)) return true;
  if (!isRoot || !(await have("apt-get"))) {
    console.error(`${pkg}: not installed and cannot be installed here (needs root and apt-get)`);
    return false;
  }
  console.error(`${pkg}: installing with apt-get ...`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  const install = `apt-get install -y -q --no-install-recommends ${pkg}`;
  try {
    await sh(`${install} || (apt-get update -q && ${install})`, env);
  } catch (e) {
    console.error(`${pkg}: apt-get failed, skipped: ${(e as Error).message.split("\n").at(-1)}`);
    return false;
  }
  return await have(cmd);
}

/** Allocated bytes under a path (`du`, reflinked extents counted per file). */
async function duBytes(path: string): Promise<number> {
  return Number((await sh(`du -s --block-size=1 ${q(path)}`)).split(/\s+/)[0]);
}

/** Used bytes of the filesystem holding `path` (reflink-aware, for the cow store). */
async function fsUsed(path: string): Promise<number> {
  return Number((await sh(`df --output=used -B1 ${q(path)} | tail -1`)).trim());
}

// ---------------------------------------------------------------------------------------
// Participants.

/** One participant's repository for one image: the commands the scenarios run. */
interface Repo {
  /** Creates the repository (untimed). */
  init(): Promise<void>;
  /** A bash command that backs the image up. */
  backup(n: number): string;
  /** A bash command writing the newest backup's image to stdout. */
  stream(): string;
  /** A bash command restoring the newest backup into `dir`; and the restored file's path. */
  restore(dir: string): { cmd: string; path: string };
  /** Bytes the repository takes on disk now. */
  stored(): Promise<number>;
  /** Removes the repository. */
  remove(): Promise<void>;
  env: Record<string, string>;
}

interface Tool {
  name: string;
  /** What it compresses with, for the report. */
  compression: string;
  open(image: string, dir: string): Repo;
}

/** The V8 flags backy ships with (src/util/entry.ts V8_FLAGS), so peak RSS is what operators see. */
const SHIPPED_V8 = "--v8-flags=--max-semi-space-size=1";

/**
 * How backy is started: from source (`deno run mod.ts` with the shipped V8 flags) or, with
 * BENCH_BACKY=artifact, as operators run it: the offline artifact `dist/backy.js` (built by
 * `deno task dist` in the checkout; its first line runs deno with the same flags).
 */
const artifact = Deno.env.get("BENCH_BACKY") === "artifact";

function backyCommand(checkout: string): string {
  return artifact
    ? q(join(checkout, "dist", "backy.js"))
    : `${q(Deno.execPath())} run --allow-all --quiet ${SHIPPED_V8} ${q(join(checkout, "mod.ts"))}`;
}

function backyTool(backend: "chunked" | "cow", checkout: string, base: () => string): Tool {
  const cmd = (job: string, args: string) => `${backyCommand(checkout)} -b ${q(job)} ${args}`;
  return {
    name: `backy ${backend}`,
    compression: backend === "chunked"
      ? "zstd -1 per 4 MiB block (blocks whose samples do not compress: stored raw)"
      : "none (sparse raw image per revision, reflink clones)",
    open(image) {
      const job = join(base(), `job-${backend}`);
      let used0 = 0;
      return {
        env: {},
        async init() {
          await sh(`rm -rf ${q(job)}`);
          used0 = backend === "cow" ? await fsUsed(base()) : 0;
          await sh(cmd(job, `init --backend ${backend} file ${q(image)}`));
        },
        backup: () => cmd(job, "backup daily"),
        stream: () => cmd(job, "restore -r 0 -"),
        restore(dir) {
          const path = join(dir, "restored.img");
          return { cmd: `${cmd(job, `restore -r 0 ${q(path)}`)} && sync ${q(path)}`, path };
        },
        stored: async () => backend === "cow" ? await fsUsed(base()) - used0 : await duBytes(job),
        async remove() {
          await sh(`rm -rf ${q(job)}`);
          if (backend === "cow") await sh(`fstrim ${q(base())} || true`);
        },
      };
    },
  };
}

function borgTool(): Tool {
  return {
    name: "borg",
    compression: "lz4 (its default; `borg init -e none`: no encryption)",
    open(image, dir) {
      const repo = join(dir, "borg-repo");
      const env = {
        BORG_BASE_DIR: join(dir, "borg-home"),
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK: "yes",
      };
      const imageDir = image.slice(0, image.lastIndexOf("/"));
      const name = image.slice(image.lastIndexOf("/") + 1);
      let last = 0;
      return {
        env,
        async init() {
          await sh(`rm -rf ${q(repo)} ${q(env.BORG_BASE_DIR)}`);
          await sh(`borg init -e none ${q(repo)}`, env);
        },
        backup(n) {
          last = n;
          return `cd ${q(imageDir)} && borg create --compression lz4 ${q(`${repo}::b${n}`)} ${
            q(name)
          }`;
        },
        stream: () => `borg extract --stdout ${q(`${repo}::b${last}`)} ${q(name)}`,
        restore: (to) => ({
          cmd: `cd ${q(to)} && borg extract --sparse ${q(`${repo}::b${last}`)} ${q(name)} && ` +
            `sync ${q(name)}`,
          path: join(to, name),
        }),
        stored: () => duBytes(repo),
        remove: () => sh(`rm -rf ${q(repo)} ${q(env.BORG_BASE_DIR)}`).then(() => {}),
      };
    },
  };
}

function resticTool(): Tool {
  return {
    name: "restic",
    compression: "zstd `auto` (repository v2), AES-256 encryption (always on)",
    open(image, dir) {
      const repo = join(dir, "restic-repo");
      const env = {
        RESTIC_REPOSITORY: repo,
        RESTIC_PASSWORD_FILE: join(dir, "restic-password"),
        RESTIC_CACHE_DIR: join(dir, "restic-cache"),
      };
      return {
        env,
        async init() {
          await sh(`rm -rf ${q(repo)} ${q(env.RESTIC_CACHE_DIR)}`);
          await Deno.writeTextFile(env.RESTIC_PASSWORD_FILE, "benchmark\n", { mode: 0o600 });
          await sh("restic init -q", env);
        },
        backup: () => `restic backup -q --host bench ${q(image)}`,
        stream: () => `restic dump -q latest ${q(image)}`,
        restore: (to) => ({
          cmd: `restic restore -q latest --target ${q(to)} && sync ${q(join(to, image))}`,
          path: join(to, image),
        }),
        stored: () => duBytes(repo),
        remove: () =>
          sh(`rm -rf ${q(repo)} ${q(env.RESTIC_CACHE_DIR)} ${q(env.RESTIC_PASSWORD_FILE)}`)
            .then(() => {}),
      };
    },
  };
}

// ---------------------------------------------------------------------------------------
// Results.

/** Values per row (scenario) and column (participant), in the order they were first seen. */
export class Cells<T> {
  readonly rows = new Map<string, Map<string, T[]>>();

  add(row: string, col: string, v: T): void {
    if (!this.rows.has(row)) this.rows.set(row, new Map());
    const cell = this.rows.get(row)!;
    cell.set(col, [...(cell.get(col) ?? []), v]);
  }

  get(row: string, col: string): T[] | undefined {
    return this.rows.get(row)?.get(col);
  }
}

/** Median (mean of the middle two for an even count). */
export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** `median (min-max)` with two decimals, or `-`. */
export function spread(values: number[] | undefined): string {
  if (!values?.length) return "-";
  const f = (x: number) => x.toFixed(2);
  return values.length === 1
    ? f(values[0])
    : `${f(median(values))} (${f(Math.min(...values))}-${f(Math.max(...values))})`;
}

/** Row names, so that the run and the report agree. */
const row = {
  first: (tag: string) => `${tag}first backup${isRoot ? ", cold cache" : ""}`,
  incr: (tag: string, cold: boolean) =>
    `${tag}incremental, 1 % rewritten, ${cold ? "cold" : "warm"} cache`,
  restore: (tag: string) =>
    `${tag}restore newest to a file (fsync incl.)${isRoot ? ", cold cache" : ""}`,
  floor: (tag: string, cold: boolean) =>
    `${tag}2x openssl dgst -sha256 (halves at once), ${cold ? "cold" : "warm"} cache`,
  cat: (tag: string, cold: boolean) =>
    `${tag}cat image > /dev/null, ${cold ? "cold" : "warm"} cache`,
  openssl: (tag: string, cold: boolean) =>
    `${tag}openssl dgst -sha256 image, ${cold ? "cold" : "warm"} cache`,
  cp: (tag: string) => `${tag}cp image + sync${isRoot ? ", cold cache" : ""}`,
};

const REF = "reference";

// ---------------------------------------------------------------------------------------
// The run.

interface Config {
  mainGiB: number;
  rounds: number;
  sweep: number[];
  sparse: { gib: number; allocatedMiB: number } | undefined;
  checkout: string;
  work: string;
}

const log = (msg: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

class Bench {
  readonly results = new Cells<Sample>();
  readonly stored = new Cells<number>();
  /** Expected SHA-256 per image state (the state is keyed by section and changes applied). */
  readonly hashes = new Map<string, string>();
  readonly timeFile: string;
  readonly tools: Tool[] = [];
  readonly skipped: string[] = [];
  readonly load: string[] = [];
  xfs: XfsMount | undefined;

  constructor(readonly cfg: Config) {
    this.timeFile = join(cfg.work, "time.out");
  }

  async time(row: string, col: string, script: string, env: Record<string, string> = {}) {
    const s = await timed(script, env, this.timeFile);
    this.results.add(row, col, s);
    log(
      `  ${col}: ${row}: ${s.wall.toFixed(2)} s, CPU ${s.cpu.toFixed(1)} s, RSS ${
        (s.rssKiB / 1024).toFixed(0)
      } MiB`,
    );
    return s;
  }

  noteLoad(when: string) {
    const l = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
    this.load.push(`${when} ${l}`);
  }

  /** The image's SHA-256 in state `key`, computed once. */
  async expected(key: string, image: string): Promise<string> {
    let h = this.hashes.get(key);
    if (!h) this.hashes.set(key, h = await streamHash(`cat ${q(image)}`));
    return h;
  }

  async verifyBackup(repo: Repo, tool: string, key: string, image: string): Promise<void> {
    const want = await this.expected(key, image);
    const got = await streamHash(repo.stream(), repo.env);
    if (got !== want) {
      throw new Error(
        `${tool}: the newest backup restores to SHA-256 ${got}, the image is ${want}`,
      );
    }
  }

  async setupTools(): Promise<void> {
    const wanted = Deno.env.get("BENCH_TOOLS")?.split(",").map((s) => s.trim());
    const want = (n: string) => !wanted || wanted.includes(n.replace(" ", "-"));
    const work = this.cfg.work;
    if (want("backy chunked")) this.tools.push(backyTool("chunked", this.cfg.checkout, () => work));
    if (want("backy cow")) {
      if (!isRoot) this.skipped.push("backy cow: needs root for an XFS loop mount with reflink");
      else {
        const maxGiB = Math.max(this.cfg.mainGiB, ...this.cfg.sweep, this.cfg.sparse?.gib ?? 0);
        const xfs = await mountXfs(
          join(work, "xfs.img"),
          join(work, "xfs"),
          (Math.ceil(maxGiB * 1.6) + 2) * GiB,
        );
        this.xfs = xfs;
        this.tools.push(backyTool("cow", this.cfg.checkout, () => xfs.dir));
      }
    }
    if (want("borg")) {
      if (await ensureTool("borg", "borgbackup")) this.tools.push(borgTool());
      else this.skipped.push("borg: the Debian package borgbackup is missing");
    }
    if (want("restic")) {
      if (await ensureTool("restic", "restic")) this.tools.push(resticTool());
      else this.skipped.push("restic: the Debian package restic is missing");
    }
    // The first run of a checkout transpiles it; keep that out of the timings.
    if (artifact) {
      await sh(`cd ${q(this.cfg.checkout)} && ${q(Deno.execPath())} task dist > /dev/null 2>&1`);
    }
    await sh(`${backyCommand(this.cfg.checkout)} --help > /dev/null`);
  }

  async teardown(): Promise<void> {
    if (this.xfs) {
      await this.xfs.unmount().catch((e) => log(`umount failed: ${e.message}`));
      this.xfs = undefined;
    }
  }

  /** Rotated participant order of round `r`; the references are one of them. */
  order(r: number): string[] {
    const all = [REF, ...this.tools.map((t) => t.name)];
    return all.map((_, k) => all[(k + r) % all.length]);
  }

  async makeImages(name: string, layout: Layout) {
    const image = join(this.cfg.work, `${name}.raw`);
    const t0 = performance.now();
    makeImage(image, layout);
    // The two halves as files of their own: openssl cannot hash a byte range of a file
    // without a pipe, and a pipe costs two more copies of every byte (see docs).
    const halfBlocks = Math.ceil(blockCount(layout.size) / 2);
    const halves = [join(this.cfg.work, `${name}.half1`), join(this.cfg.work, `${name}.half2`)];
    await sh(
      `dd if=${q(image)} of=${q(halves[0])} bs=4M count=${halfBlocks} conv=sparse status=none` +
        ` && dd if=${q(image)} of=${q(halves[1])} bs=4M skip=${halfBlocks} conv=sparse ` +
        `status=none && sync`,
    );
    log(
      `${name}: ${(layout.size / GiB).toFixed(0)} GiB image, ${
        (layout.allocated / MiB).toFixed(0)
      } MiB allocated, made in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    return { image, halves };
  }

  /** Floors: two openssl processes on the halves; optionally cat, one openssl, cp + sync. */
  async references(
    tag: string,
    image: string,
    halves: string[],
    which: { cat?: boolean; openssl?: boolean; cp?: boolean },
  ) {
    const halvesCmd = `openssl dgst -sha256 ${q(halves[0])} > /dev/null & a=$!; ` +
      `openssl dgst -sha256 ${q(halves[1])} > /dev/null & b=$!; wait $a && wait $b`;
    const cat = `cat ${q(image)} > /dev/null`;
    const openssl = `openssl dgst -sha256 ${q(image)}`;
    for (const cold of isRoot ? [true, false] : [false]) {
      const prepare = (...files: string[]) => cold ? dropCaches() : warm(...files);
      if (which.cat) {
        await prepare(image);
        await this.time(row.cat(tag, cold), REF, cat);
      }
      if (which.openssl) {
        await prepare(image);
        await this.time(row.openssl(tag, cold), REF, openssl);
      }
      await prepare(...halves);
      await this.time(row.floor(tag, cold), REF, halvesCmd);
    }
    if (which.cp) {
      const copy = join(this.cfg.work, "copy.img");
      if (isRoot) await dropCaches();
      await this.time(
        row.cp(tag),
        REF,
        `cp --reflink=never ${q(image)} ${q(copy)} && sync ${q(copy)}`,
      );
      await sh(`rm -f ${q(copy)}`);
    }
  }

  /**
   * One participant's backups of one image: first backup, then incrementals after 1 %
   * changes (cold cache if root, then warm), each verified; optionally the restore.
   */
  async backups(
    tool: Tool,
    section: string,
    tag: string,
    image: string,
    layout: Layout,
    round: number,
    opts: { timeFirst: boolean; restore: boolean },
  ) {
    const repo = tool.open(image, this.cfg.work);
    const dirty = new Set<number>();
    try {
      await repo.init();
      if (opts.timeFirst) {
        if (isRoot) await dropCaches();
        await this.time(row.first(tag), tool.name, repo.backup(0), repo.env);
        await this.verifyBackup(repo, tool.name, section, image);
        this.stored.add(`${tag}stored after the first backup`, tool.name, await repo.stored());
      } else {
        await sh(repo.backup(0), repo.env);
      }
      const before = await repo.stored();
      const states: string[] = [];
      for (const cold of isRoot ? [true, false] : [false]) {
        // A different set of blocks per round; the same for every participant.
        const step = round * 2 + (cold ? 1 : 2);
        const blocks = changedBlocks(layout, step);
        rewriteBlocks(image, layout, blocks, step);
        blocks.forEach((b) => dirty.add(b));
        states.push(String(step));
        if (cold) await dropCaches();
        else await warm(image);
        await this.time(row.incr(tag, cold), tool.name, repo.backup(step), repo.env);
        await this.verifyBackup(repo, tool.name, `${section}+${states.join("+")}`, image);
      }
      this.stored.add(
        `${tag}stored by the incrementals`,
        tool.name,
        (await repo.stored()) - before,
      );
      if (opts.restore) {
        const dir = join(this.cfg.work, "restore");
        await sh(`rm -rf ${q(dir)} && mkdir -p ${q(dir)}`);
        const { cmd, path } = repo.restore(dir);
        if (isRoot) await dropCaches();
        await this.time(row.restore(tag), tool.name, cmd, repo.env);
        await sh(`cmp ${q(path)} ${q(image)}`).catch((e) => {
          throw new Error(`${tool.name}: the restored image differs: ${e.message}`);
        });
        await sh(`rm -rf ${q(dir)}`);
      }
    } finally {
      await repo.remove();
      // Back to the original image for the next participant.
      rewriteBlocks(image, layout, [...dirty], 0);
    }
  }

  async section(
    name: string,
    tag: string,
    layout: Layout,
    opts: {
      timeFirst: boolean;
      restore: boolean;
      refs: { cat?: boolean; openssl?: boolean; cp?: boolean };
    },
  ) {
    const { image, halves } = await this.makeImages(name, layout);
    try {
      for (let r = 0; r < this.cfg.rounds; r++) {
        log(`${name}: round ${r + 1} of ${this.cfg.rounds}: ${this.order(r).join(", ")}`);
        for (const who of this.order(r)) {
          if (who === REF) await this.references(tag, image, halves, opts.refs);
          else {
            const tool = this.tools.find((t) => t.name === who)!;
            await this.backups(tool, name, tag, image, layout, r, opts);
          }
        }
      }
    } finally {
      await sh(`rm -f ${q(image)} ${halves.map(q).join(" ")}`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Report.

const sizeTag = (gib: number, main: number) => gib === main ? "" : `${gib} GiB: `;
const sparseTag = (l: Layout) =>
  `sparse ${(l.size / GiB).toFixed(0)} GiB (${(l.allocated / MiB).toFixed(0)} MiB allocated): `;

/** The Markdown report: tables, references, sweep, sparse image, ratios and targets. */
function report(b: Bench, layouts: { main: Layout; sparse?: Layout }): string {
  const cols = b.tools.map((t) => t.name);
  const cfg = b.cfg;
  const out: string[] = [];
  const walls = (r: string, c: string) => b.results.get(r, c)?.map((s) => s.wall);
  const m = (r: string, c: string) => {
    const v = walls(r, c);
    return v?.length ? median(v) : undefined;
  };
  const header = (first: string, extra: string[] = []) => {
    const all = [...cols, ...extra];
    out.push(`| ${first} | ${all.join(" | ")} |`, `|---|${all.map(() => "---").join("|")}|`);
  };
  const commit = (() => {
    try {
      const r = new Deno.Command("git", {
        args: ["-C", cfg.checkout, "log", "-1", "--format=%h (%cs)"],
        stderr: "null",
      }).outputSync();
      return new TextDecoder().decode(r.stdout).trim() || "?";
    } catch {
      return "?";
    }
  })();
  const mainTag = "";
  out.push(
    `## peers benchmark of ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
    "",
    `- backy: checkout ${cfg.checkout}, commit ${commit}, ` +
      (artifact
        ? "run as the offline artifact (`dist/backy.js`, built by `deno task dist`)."
        : "run from source (`deno run`)."),
    `- ${cfg.rounds} round(s), interleaved, the order of participants rotating per round; ` +
      "seconds as median (min-max). Load average (1, 5, 15 min): " + b.load.join("; ") + ".",
    `- Main image: ${cfg.mainGiB} GiB raw, ${(layouts.main.allocated / MiB).toFixed(0)} MiB ` +
      "allocated (25 % zero blocks as holes, 40 % random, 35 % text-like); an incremental " +
      `follows a rewrite of ${layouts.main.changeCount} of its 4 MiB blocks (1 %).`,
    ...b.skipped.map((s) => `- skipped: ${s}`),
    "",
  );

  // Main table: wall time, CPU, RSS, stored bytes.
  const mainRows = [
    row.first(mainTag),
    ...(isRoot ? [row.incr(mainTag, true)] : []),
    row.incr(mainTag, false),
    row.restore(mainTag),
  ];
  header("seconds");
  for (const r of mainRows) {
    out.push(`| ${r} | ${cols.map((c) => spread(walls(r, c))).join(" | ")} |`);
  }
  for (const r of mainRows) {
    out.push(`| CPU s (user+sys), ${r} | ${
      cols.map((c) => {
        const v = b.results.get(r, c);
        return v ? median(v.map((s) => s.cpu)).toFixed(1) : "-";
      }).join(" | ")
    } |`);
  }
  const peak = (c: string) => {
    const all = [...b.results.rows.keys()].flatMap((r) => b.results.get(r, c) ?? []);
    return all.length ? Math.max(...all.map((s) => s.rssKiB)) / 1024 : undefined;
  };
  out.push(
    `| peak RSS MiB (largest process, any scenario) | ${
      cols.map((c) => peak(c)?.toFixed(0) ?? "-").join(" | ")
    } |`,
  );
  for (const r of b.stored.rows.keys()) {
    out.push(`| ${r}, MiB | ${
      cols.map((c) => {
        const v = b.stored.get(r, c);
        return v ? (median(v) / MiB).toFixed(0) : "-";
      }).join(" | ")
    } |`);
  }
  out.push(
    "",
    "Compression and notes:",
    ...b.tools.map((t) => `- ${t.name}: ${t.compression}`),
    "",
  );

  // References.
  out.push("| reference (same run, same images) | seconds |", "|---|---|");
  for (const r of b.results.rows.keys()) {
    if (b.results.get(r, REF)) out.push(`| ${r} | ${spread(walls(r, REF))} |`);
  }
  out.push("");

  // Sweep.
  const sizes = [...new Set([cfg.mainGiB, ...cfg.sweep])].sort((x, y) => x - y);
  if (sizes.length > 1) {
    out.push("Incremental backup (1 % of blocks rewritten) by image size, seconds:", "");
    header("image, cache", ["floor: 2x openssl on the halves"]);
    for (const g of sizes) {
      for (const cold of isRoot ? [true, false] : [false]) {
        const tag = sizeTag(g, cfg.mainGiB);
        out.push(
          `| ${g} GiB, ${cold ? "cold" : "warm"} | ${
            [
              ...cols.map((c) => spread(walls(row.incr(tag, cold), c))),
              spread(walls(row.floor(tag, cold), REF)),
            ]
              .join(" | ")
          } |`,
        );
      }
    }
    out.push("");
  }

  // Sparse image.
  if (layouts.sparse) {
    const tag = sparseTag(layouts.sparse);
    out.push(`Sparse image: ${tag.slice(0, -2)}, seconds:`, "");
    header("scenario");
    for (
      const r of [row.first(tag), ...(isRoot ? [row.incr(tag, true)] : []), row.incr(tag, false)]
    ) {
      out.push(`| ${r.slice(tag.length)} | ${cols.map((c) => spread(walls(r, c))).join(" | ")} |`);
    }
    out.push("");
  }

  // Ratios and the targets of issue 14.
  const lines: string[] = [];
  const target = (what: string, v: number | undefined, goal: string, ok?: (x: number) => boolean) =>
    lines.push(
      `| ${what} | ${v === undefined ? "-" : v.toFixed(2)} | ${goal} | ${
        v === undefined || !ok ? "" : ok(v) ? "ok" : "MISSED"
      } |`,
    );
  const ratio = (a?: number, c?: number) => a !== undefined && c !== undefined ? a / c : undefined;
  const peers = cols.filter((c) => !c.startsWith("backy"));
  for (const backy of cols.filter((c) => c.startsWith("backy"))) {
    const warmRow = row.incr(mainTag, false);
    const coldRow = row.incr(mainTag, true);
    target(
      `${backy}: incremental, warm / borg`,
      ratio(m(warmRow, backy), m(warmRow, "borg")),
      "<= 0.5",
      (x) => x <= 0.5,
    );
    target(
      `${backy}: incremental, warm / floor (warm)`,
      ratio(m(warmRow, backy), m(row.floor(mainTag, false), REF)),
      "(context)",
    );
    if (isRoot) {
      target(
        `${backy}: incremental, cold / borg`,
        ratio(m(coldRow, backy), m(coldRow, "borg")),
        "<= 1.0",
        (x) => x <= 1,
      );
      target(
        `${backy}: incremental, cold / floor (cold)`,
        ratio(m(coldRow, backy), m(row.floor(mainTag, true), REF)),
        "<= 1.2",
        (x) => x <= 1.2,
      );
    }
    for (const g of sizes.filter((g) => g !== cfg.mainGiB)) {
      for (const cold of isRoot ? [true, false] : [false]) {
        const r = row.incr(sizeTag(g, cfg.mainGiB), cold);
        target(`${backy}: ${r} / borg`, ratio(m(r, backy), m(r, "borg")), "(context)");
      }
    }
    const first = row.first(mainTag);
    target(
      `${backy}: first backup / borg`,
      ratio(m(first, backy), m(first, "borg")),
      backy === "backy chunked" ? "<= 1.0" : "(context)",
      backy === "backy chunked" ? (x) => x <= 1 : undefined,
    );
    for (const peer of peers) {
      target(
        `${backy}: restore / ${peer}`,
        ratio(m(row.restore(mainTag), backy), m(row.restore(mainTag), peer)),
        "< 1.0",
        (x) => x < 1,
      );
    }
    target(
      `${backy}: restore speed / cp+sync speed`,
      ratio(m(row.cp(mainTag), REF), m(row.restore(mainTag), backy)),
      ">= 0.8",
      (x) => x >= 0.8,
    );
    if (layouts.sparse) {
      // Proportional to allocated data: the main image's incremental time scaled by the
      // allocated share, plus 1 s for what any run costs (start-up, index, fsync).
      const tag = sparseTag(layouts.sparse);
      const cold = isRoot;
      const dense = m(row.incr(mainTag, cold), backy);
      const bound = dense === undefined
        ? undefined
        : dense * layouts.sparse.allocated / layouts.main.allocated + 1;
      target(
        `${backy}: sparse incremental (${
          cold ? "cold" : "warm"
        }) / (main incremental x allocated share + 1 s)`,
        ratio(m(row.incr(tag, cold), backy), bound),
        "<= 1.0",
        (x) => x <= 1,
      );
    }
    target(`${backy}: peak RSS, MiB`, peak(backy), "< 128", (x) => x < 128);
  }
  out.push("| ratio, target (issue 14) | measured | goal | |", "|---|---|---|---|", ...lines, "");
  return out.join("\n");
}

if (import.meta.main) {
  const env = (k: string, d: string) => Deno.env.get(k) ?? d;
  const mainGiB = Number(env("BENCH_GIB", "4"));
  const cfg: Config = {
    mainGiB,
    rounds: Number(env("BENCH_ROUNDS", "3")),
    sweep: env("BENCH_SWEEP", "1,4,8") === "0"
      ? []
      : env("BENCH_SWEEP", "1,4,8").split(",").map(Number).filter((g) => g !== mainGiB),
    sparse: env("BENCH_SPARSE", "8") === "0"
      ? undefined
      : { gib: Number(env("BENCH_SPARSE", "8")), allocatedMiB: 200 },
    checkout: resolve(env("BACKY_CHECKOUT", new URL("..", import.meta.url).pathname)),
    work: Deno.env.get("BENCH_DIR") ??
      await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-peers-" }),
  };
  await Deno.mkdir(cfg.work, { recursive: true });
  const b = new Bench(cfg);
  const main = mixedLayout(mainGiB * GiB);
  const sparse = cfg.sparse
    ? sparseLayout(cfg.sparse.gib * GiB, cfg.sparse.allocatedMiB * MiB)
    : undefined;
  try {
    log(`peers benchmark in ${cfg.work}; backy from ${cfg.checkout}`);
    if (!isRoot) log("not root: no cold-cache rows, no cow (they need root)");
    b.noteLoad("at the start");
    await b.setupTools();
    await b.section("main", "", main, {
      timeFirst: true,
      restore: true,
      refs: { cat: true, openssl: true, cp: true },
    });
    for (const g of cfg.sweep) {
      await b.section(`sweep-${g}`, sizeTag(g, mainGiB), mixedLayout(g * GiB), {
        timeFirst: false,
        restore: false,
        refs: {},
      });
    }
    if (sparse) {
      await b.section("sparse", sparseTag(sparse), sparse, {
        timeFirst: true,
        restore: false,
        refs: { cat: true },
      });
    }
    b.noteLoad("at the end");
    console.log(report(b, { main, sparse }));
  } finally {
    await b.teardown();
    if (!Deno.env.get("BENCH_DIR")) await Deno.remove(cfg.work, { recursive: true });
  }
}
