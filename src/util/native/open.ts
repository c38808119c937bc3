/**
 * open(2) with exactly the flags given. Deno's node:fs turns O_EXCL into "create new"
 * (O_CREAT|O_EXCL); on a block device, O_EXCL without O_CREAT is something else: an
 * exclusive claim that fails with EBUSY while the device is mounted or claimed.
 */
import { libc } from "./libc.ts";

export const O_WRONLY = 0o1;
export const O_EXCL = 0o200;

/** An open(2) failure with its errno name (EBUSY, ENOENT, ...). */
export class OpenError extends Error {
  constructor(readonly path: string, readonly code: string, readonly errno: number) {
    super(`${code}: cannot open ${path}`);
    this.name = "OpenError";
  }
}

const NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  6: "ENXIO",
  13: "EACCES",
  16: "EBUSY",
  19: "ENODEV",
  21: "EISDIR",
  30: "EROFS",
};

/** A raw descriptor for `path` (close it with closeRaw). */
export function openRaw(path: string, flags: number): number {
  const lib = libc("opening devices");
  const fd = lib.open(new TextEncoder().encode(path + "\0"), flags, 0);
  if (fd >= 0) return fd;
  const errno = new Deno.UnsafePointerView(lib.__errno_location()!).getInt32();
  throw new OpenError(path, NAMES[errno] ?? `errno ${errno}`, errno);
}

/** Closes a descriptor from openRaw. */
export function closeRaw(fd: number): void {
  libc("opening devices").close(fd);
}
