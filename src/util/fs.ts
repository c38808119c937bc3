/** File helpers that keep the data-safety rules: temp file in the same directory, fsync, rename. */
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { BackyError, errorMessage } from "./errors.ts";
import { writeAllTo } from "./io.ts";

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Removes a file; a missing file is fine (it is what we wanted). */
export async function removeIfExists(path: string): Promise<boolean> {
  try {
    await Deno.remove(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export function tempName(path: string): string {
  const rand = crypto.getRandomValues(new Uint32Array(2));
  const base = path.slice(dirname(path).length + 1);
  return join(dirname(path), `.${base}.tmp-${rand[0].toString(36)}${rand[1].toString(36)}`);
}

/** True for the temp files tempName() creates, so scans can ignore (and clean) them. */
export function isTempName(name: string): boolean {
  return name.startsWith(".") && /\.tmp-[0-9a-z]+$/.test(name);
}

/** fsync(2) of a file (or block device) by path. */
export function fsyncFile(path: string): void {
  const fd = fs.openSync(path, "r+");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Syncs a directory so a rename into it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const f = await Deno.open(dir, { read: true });
  try {
    await f.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    f.close();
  }
}

/** Atomically replaces `path` with `data`: temp file in the same dir, fsync, rename. */
export async function atomicWrite(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const tmp = tempName(path);
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true, mode });
    await writeAllTo(file, bytes);
    await file.sync();
    file.close();
    file = undefined;
    await Deno.chmod(tmp, mode);
    await Deno.rename(tmp, path);
  } catch (e) {
    file?.close();
    await removeIfExists(tmp).catch(() => {});
    throw new BackyError(`cannot write ${path}: ${errorMessage(e)}`, { cause: e });
  }
  await fsyncDir(dirname(path));
}
