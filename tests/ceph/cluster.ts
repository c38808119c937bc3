/**
 * Test helper: a real throw-away Ceph cluster (mon + memstore OSD on 127.0.0.1).
 *
 * CI starts one cluster per run and exports CEPH_CONF; otherwise, where possible, the first
 * test file to ask starts `cluster.sh` in a fixed directory. `cluster.sh start` is idempotent
 * and flock-serialised, so parallel test files share that one cluster. It is left running
 * (stop it with `bash tests/ceph/cluster.sh purge /tmp/backy-ceph-test`): a restart costs
 * ~1.5 s per test run, a running one 0.03 s.
 *
 * Test images are written through the `rbd` CLI directly, not through src/, so the code
 * under test does not set up its own fixtures.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";

export interface CephCluster {
  /** Environment for ceph/rbd/qemu clients (CEPH_CONF, …). */
  env: Record<string, string>;
  pool: string;
}

export const CLUSTER_DIR = "/tmp/backy-ceph-test";
const SCRIPT = new URL("./cluster.sh", import.meta.url).pathname;
const NEEDED = ["ceph-mon", "ceph-osd", "ceph", "monmaptool", "ceph-authtool", "rbd"];

let cached: Promise<CephCluster | { ignored: string }> | undefined;

/** The cluster to test against, or why there is none (then tests register `ignore: true`). */
export function cephCluster(): Promise<CephCluster | { ignored: string }> {
  cached ??= findOrStart();
  return cached;
}

async function findOrStart(): Promise<CephCluster | { ignored: string }> {
  const conf = Deno.env.get("CEPH_CONF");
  if (conf) {
    const env: Record<string, string> = { CEPH_CONF: conf };
    const args = Deno.env.get("CEPH_ARGS");
    if (args) env.CEPH_ARGS = args;
    return { env, pool: Deno.env.get("CEPH_TEST_POOL") || "rbd" };
  }
  if (Deno.uid() !== 0) return { ignored: "needs root (or CEPH_CONF of a running cluster)" };
  const missing = [];
  for (const b of NEEDED) if (!(await which(b))) missing.push(b);
  if (missing.length > 0) {
    return {
      ignored: `needs Debian's ceph-common/ceph-mon/ceph-osd packages (missing: ${
        missing.join(", ")
      })`,
    };
  }
  // Pinned pool name: an inherited CEPH_TEST_POOL="" would mean "no pool" to the script.
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, "start", CLUSTER_DIR],
    env: { CEPH_TEST_POOL: "rbd" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    // prerequisites are there, so this is a real failure, not a reason to skip
    throw new Error(
      `cluster.sh start ${CLUSTER_DIR} failed (exit ${out.code}):\n` +
        new TextDecoder().decode(out.stderr),
    );
  }
  const vars: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2];
  }
  if (!vars.CEPH_CONF) throw new Error(`cluster.sh printed no CEPH_CONF:\n${stdout}`);
  return { env: { CEPH_CONF: vars.CEPH_CONF }, pool: vars.CEPH_TEST_POOL || "rbd" };
}

async function which(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const st = await Deno.stat(`${dir}/${name}`);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/**
 * Registers a test that needs the cluster; with none it is registered as ignored and the
 * reason printed once per file, so a skipped run never looks like a pass.
 */
export function cephTest(
  cluster: CephCluster | { ignored: string },
  name: string,
  fn: (c: CephCluster) => Promise<void>,
): void {
  if ("ignored" in cluster) {
    Deno.test({ name, ignore: true, fn() {} });
    return;
  }
  Deno.test({ name, sanitizeResources: true, sanitizeOps: true, fn: () => fn(cluster) });
}

/** Prints why Ceph tests are skipped (call once per test file). */
export function reportIgnored(cluster: CephCluster | { ignored: string }, file: string): void {
  if ("ignored" in cluster) console.warn(`${file}: Ceph tests IGNORED: ${cluster.ignored}`);
}

/** Runs the rbd CLI with the cluster env; throws with stderr on failure. */
export async function rbdCli(
  cluster: CephCluster,
  args: string[],
  stdin?: Uint8Array,
): Promise<Uint8Array> {
  const child = new Deno.Command("rbd", {
    args,
    env: cluster.env,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `rbd ${args.join(" ")} failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return out.stdout;
}

export interface Write {
  offset: number;
  data: Uint8Array;
}

/** A `rbd diff v1` stream holding just these writes (no snapshot names, no size record). */
export function diffV1(writes: Write[]): Uint8Array {
  let len = 12 + 1;
  for (const w of writes) len += 17 + w.data.length;
  const out = new Uint8Array(len);
  const dv = new DataView(out.buffer);
  out.set(new TextEncoder().encode("rbd diff v1\n"));
  let at = 12;
  for (const w of writes) {
    out[at] = 0x77; // 'w'
    dv.setBigUint64(at + 1, BigInt(w.offset), true);
    dv.setBigUint64(at + 9, BigInt(w.data.length), true);
    out.set(w.data, at + 17);
    at += 17 + w.data.length;
  }
  out[at] = 0x65; // 'e'
  return out;
}

/** Writes known bytes at known offsets into an existing image (via `rbd import-diff -`). */
export async function writeAt(cluster: CephCluster, spec: string, writes: Write[]) {
  await rbdCli(cluster, ["import-diff", "--no-progress", "-", spec], diffV1(writes));
}

/** Deterministic pseudo-random bytes (xorshift32), so expected data needs no storage. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed | 0) || 0x9e3779b9;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x;
    out[i + 1] = x >>> 8;
    out[i + 2] = x >>> 16;
    out[i + 3] = x >>> 24;
  }
  return out;
}

/** The expected contents of an image of `size` bytes after `writes` (later writes win). */
export function expectedImage(size: number, writes: Write[]): Uint8Array {
  const out = new Uint8Array(size);
  for (const w of writes) out.set(w.data, w.offset);
  return out;
}

export interface TestImage {
  pool: string;
  name: string;
  /** `POOL/NAME` */
  spec: string;
  size: number;
  /** Unprotects and purges its snapshots, then removes it. Safe to call twice. */
  remove(): Promise<void>;
}

let counter = 0;

/** A unique image name, so parallel test files never collide. */
export function uniqueName(prefix = "t"): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `backy-test-${prefix}-${Deno.pid}-${++counter}-${rand}`;
}

/** Creates a uniquely named image of `size` bytes holding `writes`. */
export async function createTestImage(
  cluster: CephCluster,
  size: number,
  writes: Write[] = [],
  prefix?: string,
): Promise<TestImage> {
  if (size > 64 * 1024 * 1024) throw new Error("keep test images <= 64 MiB (memstore is RAM)");
  const name = uniqueName(prefix);
  const spec = `${cluster.pool}/${name}`;
  await rbdCli(cluster, ["create", "--no-progress", "--size", `${size}B`, spec]);
  const image: TestImage = {
    pool: cluster.pool,
    name,
    spec,
    size,
    remove: () => removeImage(cluster, spec),
  };
  try {
    if (writes.length > 0) await writeAt(cluster, spec, writes);
  } catch (e) {
    await image.remove();
    throw e;
  }
  return image;
}

/** Removes an image with all its snapshots (protected ones too); absent is fine. */
export async function removeImage(cluster: CephCluster, spec: string): Promise<void> {
  let snaps: { name: string; protected: string | boolean }[];
  try {
    snaps = JSON.parse(
      new TextDecoder().decode(await rbdCli(cluster, ["snap", "ls", "--format=json", spec])),
    );
  } catch (e) {
    if (/No such file or directory/.test(String(e))) return;
    throw e;
  }
  for (const s of snaps) {
    if (s.protected === true || s.protected === "true") {
      await rbdCli(cluster, ["snap", "unprotect", `${spec}@${s.name}`]);
    }
  }
  if (snaps.length > 0) await rbdCli(cluster, ["snap", "purge", "--no-progress", spec]);
  await rbdCli(cluster, ["rm", "--no-progress", spec]);
}

/** Collects a stream into one array (chunks may be reused buffers: each is copied). */
export async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let len = 0;
  for await (const c of stream) {
    chunks.push(c.slice());
    len += c.length;
  }
  const out = new Uint8Array(len);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** First differing offset, or -1 (a readable failure instead of a 64 MiB assertEquals dump). */
/** Byte-for-byte equality that reports the first differing offset, not two huge dumps. */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string) {
  assertEquals(actual.length, expected.length, `${what}: length`);
  const at = firstDifference(actual, expected);
  assertEquals(at, -1, `${what}: first difference at offset ${at}`);
}

export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
