/**
 * The kernel's FUSE protocol (linux/fuse.h), the part a read-only filesystem needs: request
 * headers and bodies decoded, replies encoded, little-endian, with the struct layouts of
 * protocol 7.31 (which every kernel since 5.2 speaks; ours offers 7.45). Pure: no I/O.
 */

/** The protocol version we answer INIT with. */
export const FUSE_MAJOR = 7;
export const FUSE_MINOR = 31;

/** Request opcodes (enum fuse_opcode). */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;

/** Requests the kernel expects no reply to. */
export const NO_REPLY: ReadonlySet<number> = new Set([Op.FORGET, Op.BATCH_FORGET, Op.INTERRUPT]);

/** Requests that would change something: a read-only filesystem answers EROFS. */
export const MODIFYING: ReadonlySet<number> = new Set([
  Op.SETATTR,
  Op.SYMLINK,
  Op.MKNOD,
  Op.MKDIR,
  Op.UNLINK,
  Op.RMDIR,
  Op.RENAME,
  Op.LINK,
  Op.WRITE,
  Op.SETXATTR,
  Op.REMOVEXATTR,
  Op.CREATE,
  Op.FALLOCATE,
  Op.RENAME2,
  Op.COPY_FILE_RANGE,
  Op.TMPFILE,
]);

/** Linux errno values used in replies. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EACCES: 13,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EROFS: 30,
  ENOSYS: 38,
  EPROTO: 71,
} as const;

/** INIT flags (fuse_init_in/out.flags) we look at or ask for. */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
} as const;

/** fuse_open_out.open_flags. */
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_CACHE_DIR = 1 << 3;

/** File types as st_mode bits and as dirent types. */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const DT_DIR = 4;
export const DT_REG = 8;
export const DT_LNK = 10;

/** lseek whence values FUSE_LSEEK carries. */
export { SEEK_DATA, SEEK_HOLE } from "../util/native/extents.ts";

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
/** The kernel refuses reads of /dev/fuse into smaller buffers. */
export const MIN_READ_BUFFER = 8192;

/** One request: the fuse_in_header and the bytes of its body. */
export interface Request {
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  body: Uint8Array;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(v: DataView, at: number): number {
  return Number(v.getBigUint64(at, true));
}

/** Decodes the request at the start of `bytes` (one read of /dev/fuse returns one). */
export function decodeRequest(bytes: Uint8Array): Request {
  if (bytes.length < IN_HEADER_SIZE) throw new Error(`short FUSE request (${bytes.length} bytes)`);
  const v = view(bytes);
  const len = v.getUint32(0, true);
  if (len < IN_HEADER_SIZE || len > bytes.length) {
    throw new Error(`FUSE request length ${len} does not fit ${bytes.length} bytes read`);
  }
  return {
    opcode: v.getUint32(4, true),
    unique: v.getBigUint64(8, true),
    nodeid: u64(v, 16),
    uid: v.getUint32(24, true),
    gid: v.getUint32(28, true),
    pid: v.getUint32(32, true),
    body: bytes.subarray(IN_HEADER_SIZE, len),
  };
}

/** fuse_init_in: what the kernel offers. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function decodeInit(body: Uint8Array): InitIn {
  const v = view(body);
  return {
    major: v.getUint32(0, true),
    minor: v.getUint32(4, true),
    maxReadahead: v.getUint32(8, true),
    flags: v.getUint32(12, true),
  };
}

/** A NUL-terminated name (LOOKUP), as UTF-8 text. */
export function decodeName(body: Uint8Array): string {
  const end = body.indexOf(0);
  return new TextDecoder().decode(end < 0 ? body : body.subarray(0, end));
}

/** fuse_read_in (READ and READDIR). */
export interface ReadIn {
  fh: number;
  offset: number;
  size: number;
}

export function decodeRead(body: Uint8Array): ReadIn {
  const v = view(body);
  return { fh: u64(v, 0), offset: u64(v, 8), size: v.getUint32(16, true) };
}

/** fuse_open_in: the open(2) flags. */
export function decodeOpen(body: Uint8Array): { flags: number } {
  return { flags: view(body).getUint32(0, true) };
}

/** fuse_release_in / fuse_flush_in: the file handle. */
export function decodeFh(body: Uint8Array): number {
  return u64(view(body), 0);
}

/** fuse_access_in: the access(2) mask. */
export function decodeAccess(body: Uint8Array): number {
  return view(body).getUint32(0, true);
}

/** fuse_lseek_in. */
export function decodeLseek(body: Uint8Array): { fh: number; offset: number; whence: number } {
  const v = view(body);
  return { fh: u64(v, 0), offset: u64(v, 8), whence: v.getUint32(16, true) };
}

/** What the filesystem says about a node (fuse_attr). */
export interface Attr {
  ino: number;
  size: number;
  /** Allocated size in 512-byte units. */
  blocks: number;
  /** Modification (and change, access) time in microseconds since the epoch. */
  timeUs: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
}

const ATTR_SIZE = 88;

function putAttr(v: DataView, at: number, a: Attr): void {
  const sec = Math.floor(a.timeUs / 1e6);
  const nsec = (a.timeUs - sec * 1e6) * 1000;
  v.setBigUint64(at + 0, BigInt(a.ino), true);
  v.setBigUint64(at + 8, BigInt(a.size), true);
  v.setBigUint64(at + 16, BigInt(a.blocks), true);
  for (const off of [24, 32, 40]) v.setBigUint64(at + off, BigInt(sec), true);
  for (const off of [48, 52, 56]) v.setUint32(at + off, nsec, true);
  v.setUint32(at + 60, a.mode, true);
  v.setUint32(at + 64, a.nlink, true);
  v.setUint32(at + 68, a.uid, true);
  v.setUint32(at + 72, a.gid, true);
  v.setUint32(at + 76, 0, true); // rdev
  v.setUint32(at + 80, 4096, true); // blksize: what tools size their reads by
  v.setUint32(at + 84, 0, true); // flags
}

/** Cache lifetimes in seconds (whole and nanoseconds are split on encoding). */
function putTimeout(v: DataView, secAt: number, nsecAt: number, seconds: number): void {
  const whole = Math.floor(seconds);
  v.setBigUint64(secAt, BigInt(whole), true);
  v.setUint32(nsecAt, Math.round((seconds - whole) * 1e9), true);
}

/** fuse_entry_out: a LOOKUP answer. */
export function encodeEntry(
  nodeid: number,
  attr: Attr,
  entryValid: number,
  attrValid: number,
): Uint8Array {
  const out = new Uint8Array(40 + ATTR_SIZE);
  const v = view(out);
  v.setBigUint64(0, BigInt(nodeid), true);
  v.setBigUint64(8, 0n, true); // generation: node ids are never reused
  putTimeout(v, 16, 32, entryValid);
  putTimeout(v, 24, 36, attrValid);
  putAttr(v, 40, attr);
  return out;
}

/** fuse_attr_out: a GETATTR answer. */
export function encodeAttr(attr: Attr, attrValid: number): Uint8Array {
  const out = new Uint8Array(16 + ATTR_SIZE);
  const v = view(out);
  putTimeout(v, 0, 8, attrValid);
  putAttr(v, 16, attr);
  return out;
}

/** fuse_open_out: OPEN and OPENDIR answers. */
export function encodeOpen(fh: number, openFlags: number): Uint8Array {
  const out = new Uint8Array(16);
  const v = view(out);
  v.setBigUint64(0, BigInt(fh), true);
  v.setUint32(8, openFlags, true);
  return out;
}

/** What we answer INIT with. */
export interface InitOut {
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}

/** fuse_init_out (64 bytes; the kernel takes what the minor we name defines). */
export function encodeInit(o: InitOut): Uint8Array {
  const out = new Uint8Array(64);
  const v = view(out);
  v.setUint32(0, FUSE_MAJOR, true);
  v.setUint32(4, FUSE_MINOR, true);
  v.setUint32(8, o.maxReadahead, true);
  v.setUint32(12, o.flags, true);
  v.setUint16(16, o.maxBackground, true);
  v.setUint16(18, o.congestionThreshold, true);
  v.setUint32(20, o.maxWrite, true);
  v.setUint32(24, 1000, true); // time_gran: timestamps are microseconds
  v.setUint16(28, o.maxPages, true);
  return out;
}

/** fuse_statfs_out: sizes in 4 KiB blocks; nothing is free on a read-only filesystem. */
export function encodeStatfs(blocks: number, files: number): Uint8Array {
  const out = new Uint8Array(80);
  const v = view(out);
  v.setBigUint64(0, BigInt(blocks), true);
  v.setBigUint64(24, BigInt(files), true);
  v.setUint32(40, 4096, true); // bsize
  v.setUint32(44, 255, true); // namelen
  v.setUint32(48, 4096, true); // frsize
  return out;
}

/** fuse_lseek_out. */
export function encodeLseek(offset: number): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, BigInt(offset), true);
  return out;
}

/** One directory entry for READDIR. */
export interface Dirent {
  ino: number;
  name: string;
  type: number;
}

/**
 * fuse_dirent records for READDIR, starting at entry `offset` (each record's `off` is the
 * offset of the entry after it), as many as fit into `size` bytes.
 */
export function encodeDirents(entries: Dirent[], offset: number, size: number): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  let total = 0;
  for (let i = offset; i < entries.length; i++) {
    const name = enc.encode(entries[i].name);
    const len = (24 + name.length + 7) & ~7;
    if (total + len > size) break;
    const rec = new Uint8Array(len);
    const v = view(rec);
    v.setBigUint64(0, BigInt(entries[i].ino), true);
    v.setBigUint64(8, BigInt(i + 1), true);
    v.setUint32(16, name.length, true);
    v.setUint32(20, entries[i].type, true);
    rec.set(name, 24);
    parts.push(rec);
    total += len;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The fuse_out_header for a reply of `payloadLength` bytes (error: a positive errno or 0). */
export function encodeOutHeader(
  into: Uint8Array,
  unique: bigint,
  error: number,
  payloadLength: number,
): void {
  const v = view(into);
  v.setUint32(0, OUT_HEADER_SIZE + payloadLength, true);
  v.setInt32(4, -error, true);
  v.setBigUint64(8, unique, true);
}
