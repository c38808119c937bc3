/**
 * Block index `<id>.index` (design D3): a compact binary file.
 *   0  8  magic "BACKYIDX"
 *   8  4  version (1), little-endian
 *  12  4  block size
 *  16  8  image size in bytes
 *  24  8  number of blocks
 *  32 16  hash name, ASCII, NUL padded ("sha256")
 *  48 32*n  one digest per block; 32 zero bytes = an all-zero block (never stored)
 *  .. 32  SHA-256 of everything before it
 */
import { createHash } from "node:crypto";
import { BackyError } from "../util/errors.ts";

export const BLOCK_SIZE = 4 * 1024 * 1024;
export const DIGEST_SIZE = 32;
const MAGIC = "BACKYIDX";
const HEADER_SIZE = 48;

export class BlockIndex {
  constructor(
    readonly size: number,
    readonly blockSize: number,
    /** n * 32 bytes. */
    readonly digests: Uint8Array,
  ) {}

  static empty(size: number, blockSize = BLOCK_SIZE): BlockIndex {
    return new BlockIndex(
      size,
      blockSize,
      new Uint8Array(blockCount(size, blockSize) * DIGEST_SIZE),
    );
  }

  get count(): number {
    return this.digests.length / DIGEST_SIZE;
  }

  digest(i: number): Uint8Array {
    return this.digests.subarray(i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
  }

  isZero(i: number): boolean {
    const d = this.digest(i);
    for (let k = 0; k < DIGEST_SIZE; k++) if (d[k] !== 0) return false;
    return true;
  }

  set(i: number, digest: Uint8Array | null): void {
    if (digest) this.digests.set(digest, i * DIGEST_SIZE);
    else this.digests.fill(0, i * DIGEST_SIZE, (i + 1) * DIGEST_SIZE);
  }

  /** Length of block i (the last block may be short). */
  blockLength(i: number): number {
    return Math.min(this.blockSize, this.size - i * this.blockSize);
  }

  encode(): Uint8Array {
    const out = new Uint8Array(HEADER_SIZE + this.digests.length + DIGEST_SIZE);
    const view = new DataView(out.buffer);
    out.set(new TextEncoder().encode(MAGIC), 0);
    view.setUint32(8, 1, true);
    view.setUint32(12, this.blockSize, true);
    view.setBigUint64(16, BigInt(this.size), true);
    view.setBigUint64(24, BigInt(this.count), true);
    out.set(new TextEncoder().encode("sha256"), 32);
    out.set(this.digests, HEADER_SIZE);
    const sum = createHash("sha256").update(out.subarray(0, out.length - DIGEST_SIZE)).digest();
    out.set(sum, out.length - DIGEST_SIZE);
    return out;
  }

  static decode(bytes: Uint8Array, file: string): BlockIndex {
    const bad = (why: string) => new BackyError(`corrupt index file ${file}: ${why}`);
    if (bytes.length < HEADER_SIZE + DIGEST_SIZE) throw bad("truncated");
    if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) throw bad("bad magic");
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const version = view.getUint32(8, true);
    if (version !== 1) throw bad(`unsupported version ${version}`);
    const blockSize = view.getUint32(12, true);
    const size = Number(view.getBigUint64(16, true));
    const count = Number(view.getBigUint64(24, true));
    const hash = new TextDecoder().decode(bytes.subarray(32, 48)).replace(/\0+$/, "");
    if (hash !== "sha256") throw bad(`unsupported hash '${hash}'`);
    if (blockSize === 0 || count !== blockCount(size, blockSize)) throw bad("inconsistent header");
    if (bytes.length !== HEADER_SIZE + count * DIGEST_SIZE + DIGEST_SIZE) throw bad("truncated");
    const sum = createHash("sha256").update(bytes.subarray(0, bytes.length - DIGEST_SIZE)).digest();
    const stored = bytes.subarray(bytes.length - DIGEST_SIZE);
    for (let k = 0; k < DIGEST_SIZE; k++) if (sum[k] !== stored[k]) throw bad("checksum mismatch");
    return new BlockIndex(
      size,
      blockSize,
      bytes.slice(HEADER_SIZE, HEADER_SIZE + count * DIGEST_SIZE),
    );
  }
}

/**
 * The digests a damaged index still names (checksum ignored, a truncated tail dropped), or
 * undefined when even its header is unreadable. Only for protecting data from garbage
 * collection: never to read a revision with.
 */
export function salvageDigests(bytes: Uint8Array): Uint8Array[] | undefined {
  if (bytes.length < HEADER_SIZE) return undefined;
  if (new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) return undefined;
  const out: Uint8Array[] = [];
  const end = bytes.length - ((bytes.length - HEADER_SIZE) % DIGEST_SIZE);
  for (let at = HEADER_SIZE; at + DIGEST_SIZE <= end; at += DIGEST_SIZE) {
    out.push(bytes.slice(at, at + DIGEST_SIZE));
  }
  return out;
}

export function blockCount(size: number, blockSize = BLOCK_SIZE): number {
  return Math.ceil(size / blockSize);
}

export function hex(d: Uint8Array): string {
  let s = "";
  for (const b of d) s += b.toString(16).padStart(2, "0");
  return s;
}

export function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  for (let k = 0; k < DIGEST_SIZE; k++) if (a[k] !== b[k]) return false;
  return true;
}
