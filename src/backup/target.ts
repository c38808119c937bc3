/**
 * Where `backy restore` writes (spec 3.7, design D18), opened safely:
 * - a regular file: written to a temp file beside it (created exclusively, never through a
 *   symlink), fsynced, given the replaced file's owner, group and mode, renamed over it; an
 *   existing non-empty file needs --force;
 * - a block device: needs --force, is opened exclusively (a mounted or otherwise claimed
 *   device is refused: EBUSY) and must be at least as large as the revision, checked before
 *   the first byte is written; it is written in place, zeros included;
 * - `-` (stdout) or a character device: a stream; a closed stdout is refused.
 */
import * as fs from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { exists, fsyncDir, fsyncFile, removeIfExists } from "../util/fs.ts";
import { writeAllTo } from "../util/io.ts";
import { logger } from "../util/log.ts";
import { formatBytes } from "../util/format.ts";
import {
  closeRaw,
  F_GETFL,
  O_ACCMODE,
  O_EXCL,
  O_RDWR,
  O_WRONLY,
  OpenError,
  openRaw,
} from "../util/native/open.ts";
import { tryLibc } from "../util/native/libc.ts";

const log = logger("restore");

export type RestoreTarget =
  | {
    kind: "stream";
    write: (data: Uint8Array) => Promise<void>;
    close: () => Promise<void>;
  }
  | { kind: "file"; final: string; tmp: string; keep?: { uid: number; gid: number; mode: number } }
  | { kind: "device"; path: string; exclusiveFd: number };

/** Opens `target` for a revision of `size` bytes (nothing is written yet). */
export async function openTarget(
  target: string,
  size: number,
  opts: { force: boolean },
): Promise<RestoreTarget> {
  if (target === "-") return stdoutTarget();
  // Write through a symlink (e.g. /srv/vm/disk.img -> /data/disk.img), don't replace it.
  const path = await Deno.realPath(target).catch(() => resolve(target));
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new BackyError(`cannot access restore target ${path}: ${errorMessage(e)}`);
    }
  }
  if (info?.isBlockDevice) return openDevice(target, path, size, opts);
  if (info?.isCharDevice) {
    const f = await Deno.open(path, { write: true }).catch((e) => {
      throw new BackyError(`cannot write restore target ${path}: ${errorMessage(e)}`);
    });
    return streamTarget(f, () => f.close());
  }
  if (info?.isDirectory) throw new BackyError(`restore target ${path} is a directory`);
  if (info && !info.isFile) {
    throw new BackyError(`restore target ${path} is not a file, block device or stream`);
  }
  if (info && info.size > 0 && !opts.force) {
    throw new BackyError(
      `restore target ${path} exists and is not empty; use --force to overwrite it`,
    );
  }
  await removeStaleTemps(path);
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const tmp = join(dirname(path), `.${basename(path)}.backy-restore-${Deno.pid}.${rand}`);
  try {
    // createNew: O_CREAT|O_EXCL, which also refuses a symlink planted under this name.
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o640 });
    f.close();
  } catch (e) {
    throw new BackyError(`cannot write restore target ${path}: ${errorMessage(e)}`);
  }
  return {
    kind: "file",
    final: path,
    tmp,
    keep: info ? { uid: info.uid!, gid: info.gid!, mode: info.mode! & 0o7777 } : undefined,
  };
}

/** Makes a file target's temp file the target (owner and mode as before); syncs devices. */
export async function finishTarget(out: RestoreTarget): Promise<void> {
  if (out.kind === "stream") return await out.close();
  if (out.kind === "device") {
    fsyncFile(out.path);
    closeRaw(out.exclusiveFd);
    return;
  }
  fsyncFile(out.tmp);
  if (out.keep) {
    try {
      await Deno.chown(out.tmp, out.keep.uid, out.keep.gid);
    } catch (e) {
      log.warning("Cannot give the restored file its former owner", {
        file: out.final,
        uid: out.keep.uid,
        gid: out.keep.gid,
        error: errorMessage(e),
      });
    }
    await Deno.chmod(out.tmp, out.keep.mode);
  }
  await Deno.rename(out.tmp, out.final);
  await fsyncDir(dirname(out.final));
}

/** After a failure: the temp file goes, a device is released. */
export async function abortTarget(out: RestoreTarget): Promise<void> {
  if (out.kind === "file") await removeIfExists(out.tmp).catch(() => {});
  if (out.kind === "device") closeRaw(out.exclusiveFd);
}

function openDevice(
  given: string,
  path: string,
  size: number,
  opts: { force: boolean },
): RestoreTarget {
  const named = given === path ? path : `${given} (${path})`;
  if (!opts.force) {
    throw new BackyError(
      `restore target ${named} is a block device; its contents would be overwritten: ` +
        "use --force to confirm",
    );
  }
  let fd: number;
  try {
    // O_EXCL without O_CREAT on a block device: an exclusive claim, refused while the
    // device is mounted, part of an array, or held open exclusively by anyone else.
    fd = openRaw(path, O_WRONLY | O_EXCL);
  } catch (e) {
    if (e instanceof OpenError && e.code === "EBUSY") {
      throw new BackyError(
        `restore target ${named} is in use (mounted or held open exclusively); not writing to it`,
      );
    }
    throw new BackyError(`cannot open restore target ${named}: ${errorMessage(e)}`);
  }
  let capacity: number;
  try {
    capacity = deviceSize(path);
  } catch (e) {
    closeRaw(fd);
    throw new BackyError(`cannot read the size of ${named}: ${errorMessage(e)}`);
  }
  if (capacity < size) {
    closeRaw(fd);
    throw new BackyError(
      `restore target ${named} holds ${formatBytes(capacity)} (${capacity} bytes), the ` +
        `revision needs ${formatBytes(size)} (${size} bytes); nothing was written`,
    );
  }
  return { kind: "device", path, exclusiveFd: fd };
}

/** A block device's size: stat says 0, the end offset says it. */
function deviceSize(path: string): number {
  const f = Deno.openSync(path, { read: true });
  try {
    return f.seekSync(0, Deno.SeekMode.End);
  } finally {
    f.close();
  }
}

/** stdout (a terminal is refused earlier, by the command line: cli/main.ts). */
function stdoutTarget(): RestoreTarget {
  if (stdoutWasClosed()) {
    throw new BackyError("stdout is closed: nowhere to write the image to");
  }
  return streamTarget(Deno.stdout, () => {});
}

/**
 * Whether the program started with stdout closed (`>&-`). Deno's runtime then quietly puts
 * /dev/null there, opened read-write; a shell's `> /dev/null` opens it write-only.
 */
function stdoutWasClosed(): boolean {
  try {
    const out = fs.fstatSync(1);
    if (!out.isCharacterDevice() || out.rdev !== Deno.statSync("/dev/null").rdev) return false;
    const lib = tryLibc();
    return lib !== undefined && (lib.fcntl(1, F_GETFL, 0) & O_ACCMODE) === O_RDWR;
  } catch {
    return true;
  }
}

function streamTarget(
  out: { write(p: Uint8Array): Promise<number> },
  close: () => void,
): RestoreTarget {
  return {
    kind: "stream",
    write: async (data) => {
      try {
        await writeAllTo(out, data);
      } catch (e) {
        throw new BackyError(`cannot write the image: ${errorMessage(e)}`);
      }
    },
    close: () => Promise.resolve(close()),
  };
}

/** Temp files of earlier restores to the same target whose process is gone (killed). */
async function removeStaleTemps(path: string): Promise<void> {
  const prefix = `.${basename(path)}.backy-restore-`;
  try {
    for await (const e of Deno.readDir(dirname(path))) {
      if (!e.isFile || !e.name.startsWith(prefix)) continue;
      const m = /^(\d+)(\.[0-9a-z]+)?$/.exec(e.name.slice(prefix.length));
      if (!m || Number(m[1]) === Deno.pid) continue;
      if (await exists(`/proc/${m[1]}`)) continue; // that restore may still be running
      log.info("Removing the temp file of an interrupted restore", { file: e.name });
      await removeIfExists(join(dirname(path), e.name));
    }
  } catch {
    // an unreadable directory fails the restore itself a moment later, with a clear error
  }
}
