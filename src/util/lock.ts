/** flock(2)-based locks (Deno.FsFile.lock is flock); they die with the process. */
import { BackyError, errorMessage } from "./errors.ts";

export class Lock {
  private constructor(private file: Deno.FsFile, readonly path: string) {}

  /**
   * Takes the lock without waiting. The lock file is dedicated and never replaced, so the
   * lock cannot end up on a stale inode (the 2.1 trap of locking the rewritten `config`).
   */
  static async tryAcquire(path: string, exclusive: boolean, busyMessage: string): Promise<Lock> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
    } catch (e) {
      throw new BackyError(`cannot open lock file ${path}: ${errorMessage(e)}`, { cause: e });
    }
    if (!(await file.tryLock(exclusive))) {
      file.close();
      throw new BackyError(busyMessage);
    }
    return new Lock(file, path);
  }

  /** Waits for a shared lock (readers wait for a running expire/purge to finish). */
  static async acquireShared(path: string): Promise<Lock> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
    } catch (e) {
      throw new BackyError(`cannot open lock file ${path}: ${errorMessage(e)}`, { cause: e });
    }
    await file.lock(false);
    return new Lock(file, path);
  }

  release(): void {
    try {
      this.file.unlockSync();
    } finally {
      this.file.close();
    }
  }
}
