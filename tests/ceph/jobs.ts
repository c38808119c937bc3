/**
 * Helpers for black-box tests of backy against the real test cluster: job directories for
 * Ceph images, backups through the real command, snapshots and exports through the `rbd`
 * CLI (never through src/), byte-for-byte comparisons.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, expectOk, type Result, type RevInfo, revisions, tempDir } from "../helpers.ts";
import { type CephCluster, rbdCli } from "./cluster.ts";
export { assertSameBytes } from "./cluster.ts";

export const MiB = 1024 * 1024;
export const OBJECT = 4 * MiB;

export type Backend = "cow" | "chunked";

/** A job directory for a Ceph image, removed by `cleanup()`. */
export interface CephJob {
  dir: string;
  env: Record<string, string>;
  /** `backy -b DIR ARGS` with the cluster's environment (plus `extraEnv`). */
  run(args: string[], extraEnv?: Record<string, string>): Promise<Result>;
  cleanup(): Promise<void>;
}

export async function cephJob(
  c: CephCluster,
  spec: string,
  backend: Backend,
  type: "ceph-rbd" | "flyingcircus" = "ceph-rbd",
  initSpec = spec,
): Promise<CephJob> {
  const base = await tempDir("backy-ceph-job-");
  const dir = join(base, "job");
  const env = { ...c.env };
  const job: CephJob = {
    dir,
    env,
    run: (args, extraEnv = {}) => backy(["-b", dir, ...args], { env: { ...env, ...extraEnv } }),
    cleanup: () => Deno.remove(base, { recursive: true }),
  };
  expectOk(await job.run(["init", "--backend", backend, type, initSpec]), "init");
  return job;
}

/** The revision a successful `backup` just created (the newest one). */
export async function backupOk(job: CephJob, tags = "daily"): Promise<RevInfo> {
  const before = new Set((await revisions(job.dir)).map((r) => r.id));
  expectOk(await job.run(["backup", tags]), "backup");
  const added = (await revisions(job.dir)).filter((r) => !before.has(r.id));
  assertEquals(added.length, 1, "one new revision");
  return added[0];
}

/** `stats` of a revision as written in its .rev. */
export function stats(rev: RevInfo): Record<string, unknown> {
  return (rev.raw.stats ?? {}) as Record<string, unknown>;
}

/** Names of an image's snapshots, sorted. */
export async function snapNames(c: CephCluster, spec: string): Promise<string[]> {
  const list = JSON.parse(
    new TextDecoder().decode(await rbdCli(c, ["snap", "ls", "--format=json", spec])),
  ) as { name: string }[];
  return list.map((s) => s.name).sort();
}

/** `rbd export SPEC -`: the exact bytes of an image or snapshot. */
export async function exportBytes(c: CephCluster, spec: string): Promise<Uint8Array> {
  return await rbdCli(c, ["export", "--no-progress", spec, "-"]);
}

/** `backy restore -r REV -`: the revision's bytes on stdout. */
export async function restoreBytes(job: CephJob, rev: string): Promise<Uint8Array> {
  const r = expectOk(await job.run(["restore", "-r", rev, "-"]), `restore -r ${rev}`);
  return r.stdoutBytes;
}

/** Asserts the job holds exactly these revisions (oldest first), all complete. */
export async function assertRevisions(job: CephJob, ids: string[]) {
  const revs = await revisions(job.dir);
  assertEquals(revs.map((r) => r.id), ids);
  for (const r of revs) assert(r.duration !== undefined, `revision ${r.id} is complete`);
}

/** The job directory's config file, parsed. */
export async function jobConfig(job: CephJob): Promise<Record<string, unknown>> {
  return YAML.parse(await Deno.readTextFile(join(job.dir, "config")));
}

/** Rewrites the job config with some keys changed (as an admin would edit it). */
export async function editConfig(job: CephJob, changes: Record<string, unknown>) {
  const path = join(job.dir, "config");
  const cfg = { ...(await jobConfig(job)), ...changes };
  await Deno.chmod(path, 0o640);
  await Deno.writeTextFile(path, YAML.stringify(cfg));
}

/**
 * An executable `BACKY_RBD` wrapper script in `dir` running the real rbd, with `body`
 * (bash) in front for special cases; `$REAL` names the real rbd.
 */
export async function rbdWrapper(dir: string, name: string, body: string): Promise<string> {
  const real = await realRbd();
  const path = join(dir, name);
  await Deno.writeTextFile(path, `#!/bin/bash\nREAL=${real}\n${body}\nexec "$REAL" "$@"\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

async function realRbd(): Promise<string> {
  const out = await new Deno.Command("bash", { args: ["-c", "command -v rbd"], stdout: "piped" })
    .output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !path) throw new Error("rbd not found on PATH");
  return path;
}

/** Zeroes (discards) ranges of an image through `rbd import-diff` of `z` records. */
export async function discardAt(c: CephCluster, spec: string, ranges: [number, number][]) {
  const out = new Uint8Array(12 + ranges.length * 17 + 1);
  const dv = new DataView(out.buffer);
  out.set(new TextEncoder().encode("rbd diff v1\n"));
  let at = 12;
  for (const [offset, length] of ranges) {
    out[at] = 0x7a; // 'z'
    dv.setBigUint64(at + 1, BigInt(offset), true);
    dv.setBigUint64(at + 9, BigInt(length), true);
    at += 17;
  }
  out[at] = 0x65; // 'e'
  await rbdCli(c, ["import-diff", "--no-progress", "-", spec], out);
}
