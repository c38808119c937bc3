/**
 * The one binding to libc (Deno has no API for these): pipes with a chosen size, reads and
 * writes on the blocking thread pool, hole punching, data/hole seeking, and FUSE mounts. Needs
 * --allow-ffi. Loaded lazily, once per thread (each Worker has its own).
 *
 * `nonblocking: true` runs a call on Deno's blocking pool, so the event loop stays free;
 * such calls cannot take resizable memory (use buffer.ts's alignedBuffer, never resizable).
 */
import { BackyError } from "../errors.ts";

const symbols = {
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  /** pwrite(2) on the blocking pool: a Worker decodes the next block while this one goes out. */
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize", nonblocking: true },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  // FUSE (src/mount/): mounting, the device's requests and replies, fusermount3's fd passing.
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  /** read(2) on the calling thread, so errno can be read right after it. */
  readNow: { name: "read", parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** write(2) on the calling thread (a reply to /dev/fuse never blocks). */
  writeNow: { name: "write", parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** writev(2) on the calling thread: a FUSE reply from several buffers without copying. */
  writevNow: { name: "writev", parameters: ["i32", "buffer", "i32"], result: "isize" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  /** Deno.gid() needs --allow-sys=gid, which backy does not ask for. */
  getgid: { parameters: [], result: "u32" },
} as const;

/** The libc functions backy calls. */
export type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

let lib: Libc | null | undefined;

/** libc, or undefined where FFI is not allowed or libc cannot be loaded. */
export function tryLibc(): Libc | undefined {
  if (lib === undefined) {
    try {
      lib = Deno.dlopen("libc.so.6", symbols).symbols;
    } catch {
      lib = null;
    }
  }
  return lib ?? undefined;
}

/** errno of the last failed call on this thread (read right after the call). */
export function lastErrno(lib: Libc): number {
  return new Deno.UnsafePointerView(lib.__errno_location()!).getInt32();
}

/** libc, or a BackyError saying why `what` needs it. */
export function libc(what: string): Libc {
  const l = tryLibc();
  if (!l) throw new BackyError(`cannot load libc for ${what} (run with --allow-ffi)`);
  return l;
}
