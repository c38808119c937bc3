/**
 * open(2) with exactly the flags given. Deno's node:fs turns O_EXCL into "create new"
 * (O_CREAT|O_EXCL); on a block device, O_EXCL without O_CREAT is something else: an
 * exclusive claim that fails with EBUSY while the device is mounted or claimed.
 */
import { lastErrno, libc } from "./libc.ts";

// Linux open(2) and fcntl(2) values (the same on x86-64 and arm64).
export const O_RDONLY = 0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_ACCMODE = 0o3;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;

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
  const errno = lastErrno(lib);
  throw new OpenError(path, NAMES[errno] ?? `errno ${errno}`, errno);
}

/** Closes a descriptor from openRaw. */
export function closeRaw(fd: number): void {
  libc("opening devices").close(fd);
}
