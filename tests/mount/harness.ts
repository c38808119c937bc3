/**
 * Helpers for tests of real kernel FUSE mounts: why a test cannot run here (then it is
 * registered as ignored, with the reason in its name), starting `backy mount -d` and
 * stopping it for sure, and waiting for processes and mounts.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { backy, expectOk, isRoot, sh } from "../helpers.ts";

/** Why a real FUSE mount cannot be tested here, or undefined. */
export async function fuseUnavailable(): Promise<string | undefined> {
  if (!isRoot()) return "needs root to mount FUSE";
  try {
    await Deno.stat("/dev/fuse");
  } catch {
    return "needs /dev/fuse (the fuse kernel module)";
  }
  return undefined;
}

/** Why `tools` are missing here (Debian packages named), or undefined. */
export async function toolsMissing(tools: Record<string, string>): Promise<string | undefined> {
  const missing: string[] = [];
  for (const [tool, pkg] of Object.entries(tools)) {
    const r = await sh("sh", ["-c", `command -v ${tool}`]);
    if (r.code !== 0) missing.push(`${tool} (Debian package ${pkg})`);
  }
  return missing.length ? `needs ${missing.join(", ")}` : undefined;
}

/**
 * Registers a test needing a real FUSE mount (and `tools`); where it cannot run it is
 * registered as ignored, with the reason in its name.
 */
export async function fuseTest(
  name: string,
  tools: Record<string, string>,
  fn: () => Promise<void>,
): Promise<void> {
  const why = (await fuseUnavailable()) ?? (await toolsMissing(tools));
  if (why) {
    Deno.test({ name: `${name} (IGNORED: ${why})`, ignore: true, fn() {} });
    return;
  }
  Deno.test({ name, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Whether a process still runs (not a zombie). */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat);
  } catch {
    return false;
  }
}

/** Waits until `cond` holds (at most `ms`), else throws `what`. */
export async function waitFor(what: string, cond: () => Promise<boolean>, ms = 10_000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Mount entries of `mountpoint` (type and source), from this process's mountinfo. */
export async function mountsAt(mountpoint: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-", 6);
    if (sep > 0 && f[4] === mountpoint) out.push(`${f[sep + 1]} ${f[sep + 2]}`);
  }
  return out;
}

/** A running background mount, stopped for sure by `stop()`. */
export interface Mounted {
  pid: number;
  mountpoint: string;
  stop(): Promise<void>;
}

/** `backy -b DIR mount -d [extra] MOUNTPOINT`, asserting success; returns the child's pid. */
export async function mountDaemon(
  dir: string,
  mountpoint: string,
  extra: string[] = [],
  env?: Record<string, string>,
): Promise<Mounted> {
  const r = expectOk(await backy(["-b", dir, "mount", "-d", ...extra, mountpoint], { env }));
  const m = /\(pid (\d+), log /.exec(r.stdout);
  if (!m) throw new Error(`no pid in: ${r.stdout}`);
  const pid = Number(m[1]);
  return {
    pid,
    mountpoint,
    stop: async () => {
      if ((await mountsAt(mountpoint)).length) {
        await backy(["umount", "--lazy", mountpoint]);
      }
      const ended = async () => !(await alive(pid));
      await waitFor(`mount process ${pid} to end`, ended, 5000).catch(async () => {
        Deno.kill(pid, "SIGKILL");
        // Until it is gone, its open files keep the job's filesystem busy.
        await waitFor(`killed mount process ${pid} to end`, ended, 5000);
      });
    },
  };
}

/** `backy umount MOUNTPOINT`, asserting success, then waits for the mount process to end. */
export async function unmountOk(m: Mounted): Promise<void> {
  const r = expectOk(await backy(["umount", m.mountpoint]));
  assertEquals(r.stdout, `Unmounted ${m.mountpoint}\n`);
  await waitFor("the mount process to end", async () => !(await alive(m.pid)));
}
