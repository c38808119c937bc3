/**
 * flock(2)-based locks (Deno.FsFile.lock is flock); they die with the process. Lock files
 * are readable by their owner only (design D18): flock needs no more than a read
 * descriptor, so a lock file others can open is a lock others can hold. Whoever holds a
 * lock we need is named in the message (from /proc/locks).
 */
import { BackyError, errorMessage } from "./errors.ts";
import { logger } from "./log.ts";

const log = logger("lock");

/** How long a reader waits for a lock held exclusively (BACKY_LOCK_TIMEOUT, seconds). */
export function lockTimeoutMs(): number {
  const s = Number(Deno.env.get("BACKY_LOCK_TIMEOUT") ?? "900");
  return Number.isFinite(s) && s >= 0 ? s * 1000 : 900_000;
}

async function openLockFile(path: string): Promise<Deno.FsFile> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
  } catch (e) {
    throw new BackyError(`cannot open lock file ${path}: ${errorMessage(e)}`, { cause: e });
  }
  try {
    const info = await file.stat();
    // Lock files of earlier versions were 0644: close them to others now.
    if ((info.mode ?? 0) & 0o077 && info.uid === Deno.uid()) {
      await Deno.chmod(path, 0o600);
    }
  } catch {
    // not ours to change; the lock still works
  }
  return file;
}

export class Lock {
  private constructor(private file: Deno.FsFile, readonly path: string) {}

  /**
   * Takes the lock without waiting. The lock file is dedicated and never replaced, so the
   * lock cannot end up on a stale inode (the 2.1 trap of locking the rewritten `config`).
   */
  static async tryAcquire(
    path: string,
    exclusive: boolean,
    busyMessage: string | ((holder: string) => string),
  ): Promise<Lock> {
    const file = await openLockFile(path);
    if (!(await file.tryLock(exclusive))) {
      file.close();
      throw new BackyError(
        typeof busyMessage === "string" ? busyMessage : busyMessage(await heldBy(path)),
      );
    }
    return new Lock(file, path);
  }

  /**
   * Waits for a shared lock (readers wait for a running expire/purge to finish), at most
   * `timeoutMs`; says once who it waits for.
   */
  static async acquireShared(path: string, timeoutMs = lockTimeoutMs()): Promise<Lock> {
    const file = await openLockFile(path);
    if (await file.tryLock(false)) return new Lock(file, path);
    const holder = await heldBy(path);
    log.info(`Waiting for lock ${path}, held${holder}`, { timeout: timeoutMs / 1000 });
    const deadline = Date.now() + timeoutMs;
    for (let wait = 50; Date.now() < deadline; wait = Math.min(wait * 2, 1000)) {
      await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, deadline - Date.now()))));
      if (await file.tryLock(false)) return new Lock(file, path);
    }
    file.close();
    throw new BackyError(
      `timed out after ${timeoutMs / 1000} s waiting for lock ${path} (held${await heldBy(
        path,
      )})`,
    );
  }

  release(): void {
    try {
      this.file.unlockSync();
    } finally {
      this.file.close();
    }
  }
}

/** " by pid N (COMMAND)" for the process holding a lock on `path`, or "". */
export async function heldBy(path: string): Promise<string> {
  try {
    const info = await Deno.stat(path);
    const holders = lockHolders(await Deno.readTextFile("/proc/locks"), info.ino!, info.dev);
    if (holders.length === 0) return "";
    const pid = holders[0];
    let cmd = "";
    try {
      const raw = await Deno.readTextFile(`/proc/${pid}/cmdline`);
      cmd = raw.split("\0").filter((a) => a).join(" ");
      if (cmd.length > 300) cmd = `${cmd.slice(0, 297)}...`;
    } catch {
      // gone meanwhile, or hidden
    }
    return ` by pid ${pid}${cmd ? ` (${cmd})` : ""}`;
  } catch {
    return "";
  }
}

/**
 * PIDs holding (not waiting for) a lock on the inode, from /proc/locks text:
 * `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (device numbers in hex).
 */
export function lockHolders(procLocks: string, ino: number, dev?: number): number[] {
  const pids: number[] = [];
  for (const line of procLocks.split("\n")) {
    const m = /^\d+:\s+\S+\s+\S+\s+\S+\s+(\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (!m || Number(m[4]) !== ino) continue;
    if (dev !== undefined) {
      const major = ((dev >> 8) & 0xfff) | Math.floor(dev / 2 ** 32) & ~0xfff;
      const minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
      if (parseInt(m[2], 16) !== major || parseInt(m[3], 16) !== minor) continue;
    }
    pids.push(Number(m[1]));
  }
  return pids;
}
