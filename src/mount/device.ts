/**
 * The kernel side of a FUSE mount: /dev/fuse opened and mounted (mount(2) as root, else
 * through the setuid `fusermount3`, which passes the descriptor back over a socket), requests
 * read and replies written, and unmounting. Requests are read on the calling thread with
 * the descriptor non-blocking (so errno is visible: ENODEV means the mount is gone); only
 * the wait for the next request (poll) runs on Deno's blocking pool.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { lastErrno, libc } from "../util/native/libc.ts";
import {
  closeRaw,
  F_GETFL,
  F_SETFD,
  F_SETFL,
  FD_CLOEXEC,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  openRaw,
} from "../util/native/open.ts";
import { encodeOutHeader, OUT_HEADER_SIZE } from "./protocol.ts";

const MS_RDONLY = 1;
const MS_NOSUID = 2;
const MS_NODEV = 4;
const MS_NOEXEC = 8;
const MNT_DETACH = 2;
const POLLIN = 0x1;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

const EINTR = 4;
const ENOENT = 2;
const EAGAIN = 11;
const ENODEV = 19;

/** Largest READ the kernel sends us (INIT's max_pages × 4 KiB). */
export const MAX_READ = 1 << 20;
/** Our requests are small (no writes arrive on a read-only mount); the kernel wants ≥ 8 KiB. */
const REQUEST_BUFFER = 128 * 1024 + 4096;

/** How the filesystem shows up in mountinfo and `df`. */
export interface MountSpec {
  mountpoint: string;
  /** The source column: the job or base directory served. */
  fsname: string;
  /** `fuse.SUBTYPE` is the filesystem type. */
  subtype: string;
}

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");

function errno(): number {
  return lastErrno(libc("FUSE"));
}

const ERRNO_TEXT: Record<number, string> = {
  1: "operation not permitted",
  2: "no such file or directory",
  13: "permission denied",
  16: "busy",
  19: "no such device",
  20: "not a directory",
  22: "invalid argument",
};

function errnoText(n: number): string {
  return ERRNO_TEXT[n] ?? `errno ${n}`;
}

/** An open, mounted /dev/fuse connection. */
export class FuseDevice {
  #buf = new Uint8Array(REQUEST_BUFFER);
  #header = new Uint8Array(OUT_HEADER_SIZE);
  #pollfd = new Uint8Array(8);
  #ended = false;

  private constructor(readonly fd: number, readonly spec: MountSpec, readonly viaHelper: boolean) {
    new DataView(this.#pollfd.buffer).setInt32(0, fd, true);
    new DataView(this.#pollfd.buffer).setInt16(4, POLLIN, true);
  }

  /**
   * Mounts a read-only FUSE filesystem on `spec.mountpoint`: mount(2) as root, otherwise
   * `fusermount3` (setuid root; the mountpoint must be the caller's).
   */
  static async mount(spec: MountSpec): Promise<FuseDevice> {
    if (Deno.uid() === 0) return FuseDevice.#mountAsRoot(spec);
    return await FuseDevice.#mountWithHelper(spec);
  }

  static #mountAsRoot(spec: MountSpec): FuseDevice {
    let fd: number;
    try {
      fd = openRaw("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    } catch (e) {
      throw new BackyError(
        `cannot open /dev/fuse: ${errorMessage(e)} (is the fuse module loaded?)`,
      );
    }
    const options =
      `fd=${fd},rootmode=40000,user_id=${Deno.uid()},group_id=${libc("FUSE").getgid()},` +
      `default_permissions,max_read=${MAX_READ}`;
    const rc = libc("FUSE").mount(
      cstr(spec.fsname),
      cstr(spec.mountpoint),
      cstr(`fuse.${spec.subtype}`),
      BigInt(MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
      cstr(options),
    );
    if (rc !== 0) {
      const n = errno();
      closeRaw(fd);
      throw new BackyError(`cannot mount on ${spec.mountpoint}: ${errnoText(n)}`);
    }
    return new FuseDevice(fd, spec, false);
  }

  static async #mountWithHelper(spec: MountSpec): Promise<FuseDevice> {
    const lib = libc("FUSE");
    const sv = new Int32Array(2);
    // Not close-on-exec: fusermount3 inherits sv[1] and sends the /dev/fuse descriptor on it.
    if (lib.socketpair(AF_UNIX, SOCK_STREAM, 0, sv) !== 0) {
      throw new BackyError(`cannot create a socket pair for fusermount3: ${errnoText(errno())}`);
    }
    lib.fcntl(sv[0], F_SETFD, FD_CLOEXEC);
    const options = [
      "ro",
      "nosuid",
      "nodev",
      "noexec",
      "default_permissions",
      `max_read=${MAX_READ}`,
      `fsname=${helperEscape(spec.fsname)}`,
      `subtype=${spec.subtype}`,
    ].join(",");
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(await fusermount(), {
        args: ["-o", options, "--", spec.mountpoint],
        env: { _FUSE_COMMFD: String(sv[1]) },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (e) {
      closeRaw(sv[0]);
      closeRaw(sv[1]);
      throw new BackyError(`cannot run fusermount3: ${errorMessage(e)}`);
    }
    closeRaw(sv[1]);
    if (!out.success) {
      closeRaw(sv[0]);
      const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
      throw new BackyError(`cannot mount on ${spec.mountpoint}: ${why || "fusermount3 failed"}`);
    }
    const fd = receiveFd(sv[0]);
    closeRaw(sv[0]);
    if (fd < 0) throw new BackyError("fusermount3 mounted but passed no /dev/fuse descriptor");
    lib.fcntl(fd, F_SETFD, FD_CLOEXEC);
    lib.fcntl(fd, F_SETFL, lib.fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
    return new FuseDevice(fd, spec, true);
  }

  /** Whether the kernel ended the connection (unmounted, or aborted). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * The next requests (copies), waiting for at least one; null once the filesystem is
   * unmounted. `stop()` is asked at least once a second while waiting.
   */
  async next(stop: () => boolean = () => false): Promise<Uint8Array[] | null> {
    const lib = libc("FUSE");
    for (;;) {
      const batch: Uint8Array[] = [];
      for (;;) {
        const n = Number(lib.readNow(this.fd, this.#buf, BigInt(this.#buf.length)));
        if (n > 0) {
          batch.push(this.#buf.slice(0, n));
          continue;
        }
        const e = errno();
        if (e === ENOENT || e === EINTR) continue; // a request interrupted before we took it
        if (e === ENODEV) this.#ended = true;
        else if (e !== EAGAIN) throw new BackyError(`reading /dev/fuse failed: ${errnoText(e)}`);
        break;
      }
      if (batch.length) return batch;
      if (this.#ended || stop()) return null;
      await lib.poll(this.#pollfd, 1n, 1000);
    }
  }

  /**
   * Writes one reply: `error` (a positive errno, 0 for success) and the payload parts, in one
   * writev from where they are (the caller keeps them unchanged until this returns). Returns
   * false when the kernel no longer waits for it (the request was interrupted).
   */
  reply(unique: bigint, error: number, ...parts: Uint8Array[]): boolean {
    const payload = error === 0 ? parts.filter((p) => p.length > 0) : [];
    let length = 0;
    for (const p of payload) length += p.length;
    encodeOutHeader(this.#header, unique, error, length);
    const iov = new BigUint64Array(2 * (payload.length + 1));
    const all = [this.#header, ...payload];
    all.forEach((p, k) => {
      iov[2 * k] = BigInt(
        Deno.UnsafePointer.value(Deno.UnsafePointer.of(p as Uint8Array<ArrayBuffer>)),
      );
      iov[2 * k + 1] = BigInt(p.length);
    });
    const total = OUT_HEADER_SIZE + length;
    const n = Number(libc("FUSE").writevNow(this.fd, iov, all.length));
    if (n === total) return true;
    const e = errno();
    if (e === ENOENT) return false;
    if (e === ENODEV) {
      this.#ended = true;
      return false;
    }
    throw new BackyError(`replying on /dev/fuse failed: ${errnoText(e)}`);
  }

  /** Closes the descriptor: if still mounted, the mount is left "not connected". */
  close(): void {
    closeRaw(this.fd);
  }
}

/** fusermount3 (fuse3), else fusermount (fuse 2 speaks the same descriptor passing). */
async function fusermount(): Promise<string> {
  for (const name of ["fusermount3", "fusermount"]) {
    for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
      try {
        await Deno.stat(`${dir}/${name}`);
        return `${dir}/${name}`;
      } catch {
        // not here
      }
    }
  }
  throw new BackyError(
    "mounting without root needs fusermount3 (Debian package fuse3); as root backy mounts itself",
  );
}

/** fusermount's option parser splits at commas; a backslash keeps one in a value. */
function helperEscape(value: string): string {
  return value.replace(/[\\,]/g, (c) => `\\${c}`);
}

/** The descriptor sent with SCM_RIGHTS on a Unix socket, or -1. */
function receiveFd(sock: number): number {
  const data = new Uint8Array(8);
  const iov = new BigUint64Array(2);
  const control = new Uint8Array(64);
  const msg = new BigUint64Array(7);
  const ptr = (b: BufferSource) =>
    Deno.UnsafePointer.value(Deno.UnsafePointer.of(b as Uint8Array<ArrayBuffer>));
  iov[0] = BigInt(ptr(data));
  iov[1] = BigInt(data.length);
  msg[2] = BigInt(ptr(iov));
  msg[3] = 1n;
  msg[4] = BigInt(ptr(control));
  msg[5] = BigInt(control.length);
  const n = Number(libc("FUSE").recvmsg(sock, msg, 0));
  if (n < 0) return -1;
  const v = new DataView(control.buffer);
  const len = Number(v.getBigUint64(0, true));
  if (len < 20 || v.getInt32(8, true) !== SOL_SOCKET || v.getInt32(12, true) !== SCM_RIGHTS) {
    return -1;
  }
  return v.getInt32(16, true);
}

/**
 * Unmounts a FUSE mount: umount2(2) as root (`lazy`: detach now, finish when no longer
 * busy), else `fusermount3 -u` (`-z`). Throws a BackyError naming the cause.
 */
export async function unmount(mountpoint: string, lazy: boolean): Promise<void> {
  if (Deno.uid() === 0) {
    if (libc("FUSE").umount2(cstr(mountpoint), lazy ? MNT_DETACH : 0) === 0) return;
    const e = errno();
    if (e === 16) {
      throw new BackyError(
        `${mountpoint} is busy (a process has a file open or its working directory there, or a ` +
          "loop device is attached); close those, or use 'backy umount --lazy'",
      );
    }
    throw new BackyError(`cannot unmount ${mountpoint}: ${errnoText(e)}`);
  }
  const out = await new Deno.Command(await fusermount(), {
    args: ["-u", ...(lazy ? ["-z"] : []), "--", mountpoint],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    throw new BackyError(`cannot unmount ${mountpoint}: ${why || "fusermount3 -u failed"}`);
  }
}
