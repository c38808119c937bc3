/**
 * Chunk files of the chunked store (design D3): `chunks/<2 hex>/<64 hex>`, zstd level 1 of
 * the block, named by the SHA-256 of the uncompressed block. Written to a temp file in the
 * same directory, fsynced, made read-only, renamed; read back only through a hash check.
 * Synchronous on purpose: these run inside the data-path Workers.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import * as zlib from "node:zlib";
import { join } from "node:path";
import { BackyError } from "../util/errors.ts";
import { DamagedBlockError } from "./block_store.ts";
import { hex, sameDigest } from "../repo/index_file.ts";
import { free, released } from "../util/gc.ts";
import { writeFileDurably } from "../util/directio.ts";
import { alignedBuffer, isPageAligned, scratchBuffer } from "../util/native/buffer.ts";
import { zstd, ZSTD_BLOCK_MAX, ZstdError } from "../util/native/zstd.ts";
import { inPlaceMargin, inPlaceRoom } from "./in_place.ts";

export function chunkPath(chunksDir: string, digest: Uint8Array): string {
  const h = hex(digest);
  return join(chunksDir, h.slice(0, 2), h);
}

export function chunkExists(chunksDir: string, digest: Uint8Array): boolean {
  return fs.existsSync(chunkPath(chunksDir, digest));
}

/** Stores `data` under `digest` unless present. Returns the compressed size written (0 if present). */
export function writeChunk(chunksDir: string, digest: Uint8Array, data: Uint8Array): number {
  const path = chunkPath(chunksDir, digest);
  if (fs.existsSync(path)) return 0;
  const dir = path.slice(0, path.lastIndexOf("/"));
  fs.mkdirSync(dir, { recursive: true });
  const packed = packBlock(data);
  const tmp = join(
    dir,
    `.${path.slice(dir.length + 1)}.tmp-${Math.random().toString(36).slice(2)}`,
  );
  try {
    writeFileDurably(tmp, packed, 0o600);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.chmodSync(tmp, 0o440);
  fs.renameSync(tmp, path);
  return packed.length;
}

/** zstd level of the chunk format (design D3). */
const LEVEL = 1;

/**
 * A block as a chunk's bytes: a zstd level 1 frame, or a frame of raw blocks when the block
 * looks incompressible. In the page-aligned frame buffer, with room behind it for
 * writeFileDurably's padding: valid until the next call (copy what you keep).
 */
export function packBlock(data: Uint8Array): Uint8Array {
  if (looksIncompressible(data)) return rawFrame(data);
  const z = zstd();
  if (z) {
    const bound = z.bound(data.length);
    const out = frameBuffer(bound + 4096);
    return out.subarray(0, z.compress(data, out.subarray(0, bound), LEVEL));
  }
  const fresh = compress(data);
  // Into the (page-aligned) frame buffer, so the write needs no buffer of its own.
  const out = frameBuffer(fresh.length + 4096);
  out.set(fresh);
  const n = fresh.length;
  free(fresh); // zstd's output: copied (and now detached: length 0)
  return out.subarray(0, n);
}

/** node:zlib's zstd, where libzstd cannot be loaded. */
function compress(data: Uint8Array): Uint8Array {
  const packed = zlib.zstdCompressSync(data, {
    chunkSize: ZSTD_CHUNK,
    params: { [zlib.constants.ZSTD_c_compressionLevel]: LEVEL },
  });
  // zstd's native context, which only a collection frees (the output is freed once written).
  released(ZSTD_CONTEXT);
  return packed;
}

/**
 * What a zstd call leaves behind until a collection, besides its output (freed explicitly):
 * a little native state. Counted so that util/gc.ts collects now and then.
 */
const ZSTD_CONTEXT = 64 * 1024;

const SAMPLES = 16;
const SAMPLE_SIZE = 4096;
const sampleBuf = new Uint8Array(SAMPLES * SAMPLE_SIZE);

/**
 * Whether zstd would gain (almost) nothing on this block, judged from 16 pieces of 4 KiB
 * spread over it. Already compressed or encrypted data is common in VM images, and zstd
 * level 1 spends ~1.4 ms per MiB on it to produce a frame of raw blocks; this test costs
 * ~2 % of that. A block whose compressible parts all fall between the samples is stored
 * uncompressed: at worst less saved space, never different bytes.
 */
export function looksIncompressible(data: Uint8Array): boolean {
  if (data.length < SAMPLES * SAMPLE_SIZE * 4) return false;
  const step = Math.floor((data.length - SAMPLE_SIZE) / (SAMPLES - 1));
  for (let i = 0; i < SAMPLES; i++) {
    sampleBuf.set(data.subarray(i * step, i * step + SAMPLE_SIZE), i * SAMPLE_SIZE);
  }
  const z = zstd();
  if (z) {
    sampleOut ??= new Uint8Array(z.bound(sampleBuf.length));
    return z.compress(sampleBuf, sampleOut, LEVEL) > sampleBuf.length * 0.97;
  }
  const packed = zlib.zstdCompressSync(sampleBuf, {
    params: { [zlib.constants.ZSTD_c_compressionLevel]: LEVEL },
  });
  const incompressible = packed.length > sampleBuf.length * 0.97;
  free(packed);
  return incompressible;
}

let sampleOut: Uint8Array | undefined;

/**
 * `data` as a standard zstd frame of raw (stored) blocks, as zstd itself writes
 * incompressible input: magic, a single-segment header with a 4-byte content size, then
 * 3-byte block headers before each piece of at most 128 KiB. Built in a page-aligned
 * buffer that is reused (valid until the next call) and written without another copy.
 */
export function rawFrame(data: Uint8Array): Uint8Array {
  const blocks = Math.max(1, Math.ceil(data.length / ZSTD_BLOCK_MAX));
  const size = 9 + 3 * blocks + data.length;
  // Room for writeFileDurably's padding to the next 4 KiB.
  const room = Math.ceil(size / 4096) * 4096;
  // The same buffer as chunk reads (never both within one request): one 4 MiB per Worker less.
  const out = frameBuffer(room);
  const fh = new DataView(out.buffer, out.byteOffset, 9);
  fh.setUint32(0, 0xfd2fb528, true);
  out[4] = 0xa0; // FCS field 4 bytes, single segment, no checksum, no dictionary
  fh.setUint32(5, data.length, true);
  let pos = 9;
  for (let b = 0; b < blocks; b++) {
    const piece = data.subarray(b * ZSTD_BLOCK_MAX, (b + 1) * ZSTD_BLOCK_MAX);
    const header = (piece.length << 3) | (b === blocks - 1 ? 1 : 0); // type 0 = raw
    out[pos] = header & 0xff;
    out[pos + 1] = (header >> 8) & 0xff;
    out[pos + 2] = (header >> 16) & 0xff;
    out.set(piece, pos + 3);
    pos += 3 + piece.length;
  }
  return out.subarray(0, pos);
}

/** One output buffer per (de)compression instead of node's default 16 KiB pieces. */
const ZSTD_CHUNK = 4 * 1024 * 1024 + 64 * 1024;
let readBuf = alignedBuffer(ZSTD_CHUNK);

/** The frame buffer (frames being written or read), grown to at least `size` bytes. */
function frameBuffer(size: number): Uint8Array {
  if (readBuf.length < size) readBuf = alignedBuffer(size);
  return readBuf;
}

/**
 * Without libzstd: incompressible blocks (most VM data that is already compressed or
 * encrypted) come out of zstd as a frame of raw blocks. Decoding those means copying their payload; doing that
 * into a reused buffer (or the caller's) instead of zlib's fresh 4 MiB allocation per chunk
 * halves the cost of restores and verification here (page faults on fresh memory
 * dominate). Returns undefined for anything else (compressed blocks, several frames), which
 * zlib decodes. The caller's SHA-256 check covers the content.
 */
function storedFrame(
  packed: Uint8Array,
  expected: number,
  target: Uint8Array,
): Uint8Array | undefined {
  let out = 0;
  const n = walkStoredFrame(packed, expected, (piece) => {
    target.set(piece, out);
    out += piece.length;
  }, (byte, size) => {
    target.fill(byte, out, out + size);
    out += size;
  });
  return n === undefined ? undefined : target.subarray(0, n);
}

/**
 * Walks a zstd frame made of raw and RLE blocks only (what incompressible data becomes),
 * handing out its content piece by piece; returns its length, or undefined when the frame is
 * anything else (compressed blocks, several frames, malformed) or longer than `expected`.
 */
function walkStoredFrame(
  packed: Uint8Array,
  expected: number,
  raw: (piece: Uint8Array) => void,
  rle: (byte: number, size: number) => void,
): number | undefined {
  if (packed.length < 6) return undefined;
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  if (view.getUint32(0, true) !== 0xfd2fb528) return undefined;
  const fhd = packed[4];
  const fcsFlag = fhd >> 6, single = (fhd >> 5) & 1, checksum = (fhd >> 2) & 1;
  let pos = 5 + (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3];
  pos += [single ? 1 : 0, 2, 4, 8][fcsFlag];
  // First check the block structure, so that nothing is handed out for another kind of frame.
  let total = 0;
  const pieces: [number, number, number][] = []; // type, position, size
  while (true) {
    if (pos + 3 > packed.length) return undefined;
    const header = packed[pos] | (packed[pos + 1] << 8) | (packed[pos + 2] << 16);
    pos += 3;
    const last = header & 1, type = (header >> 1) & 3, size = header >>> 3;
    if (total + size > expected) return undefined;
    if (type === 0) {
      if (pos + size > packed.length) return undefined;
      pieces.push([0, pos, size]);
      pos += size;
    } else if (type === 1) {
      if (pos + 1 > packed.length) return undefined;
      pieces.push([1, pos, size]);
      pos += 1;
    } else return undefined;
    total += size;
    if (last) break;
  }
  if (checksum) pos += 4;
  if (pos !== packed.length) return undefined;
  for (const [type, at, size] of pieces) {
    if (type === 0) raw(packed.subarray(at, at + size));
    else rle(packed[at], size);
  }
  return total;
}

/**
 * A chunk file's bytes, into a reused page-aligned buffer. O_DIRECT where the filesystem
 * allows it: chunks are mostly read once (restore, verification), so the page cache would
 * only add a copy and push out what is worth caching.
 */
function readPacked(
  path: string,
  bufferFor: (want: number, size: number) => Uint8Array | undefined = () => undefined,
): Uint8Array {
  let fd: number;
  let direct = true;
  try {
    fd = fs.openSync(path, fs.constants.O_RDONLY | (fs.constants.O_DIRECT ?? 0));
  } catch (e) {
    if ((e as { code?: string }).code !== "EINVAL") throw e;
    fd = fs.openSync(path, "r"); // e.g. tmpfs
    direct = false;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const want = direct ? Math.ceil(size / 4096) * 4096 : size;
    const buf = bufferFor(want, size) ?? frameBuffer(want);
    let got = 0;
    while (got < size) {
      const n = fs.readSync(fd, buf, got, want - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, Math.min(got, size));
  } finally {
    fs.closeSync(fd);
  }
}

/** A chunk file's bytes; a missing or unreadable file is damage (DamagedBlockError). */
function readChunkFile(
  path: string,
  bufferFor?: (want: number, size: number) => Uint8Array | undefined,
): Uint8Array {
  try {
    return readPacked(path, bufferFor);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === "ENOENT") {
      throw new DamagedBlockError(`chunk ${path} is unreadable: missing`, path);
    }
    if (code === "EIO") throw new DamagedBlockError(`chunk ${path} is unreadable: ${e}`, path);
    throw new BackyError(`chunk ${path} is unreadable: ${e}`);
  }
}

/**
 * Reads a chunk, decompresses it and proves its content hash; anything else is an error.
 * The bytes land in `into` when given (and large enough), else in a buffer the next call
 * reuses: copy what you keep.
 */
export function readChunk(
  chunksDir: string,
  digest: Uint8Array,
  length: number,
  into?: Uint8Array,
): Uint8Array {
  const path = chunkPath(chunksDir, digest);
  if (into && into.length >= inPlaceRoom(length) && isPageAligned(into) && zstd()?.inPlace) {
    try {
      return readInPlace(path, digest, length, into);
    } catch {
      // Read and decoded the ordinary way once more: only that verdict counts.
    }
  }
  return unpackBlock(readChunkFile(path), digest, length, path, into);
}

/**
 * readChunk inside `into`: the frame is read (O_DIRECT, page-aligned) so that it ends where
 * the room for decoding in place ends, and decoded towards the buffer's start. Saves the
 * frame buffer (4 MiB per Worker in restores). Any failure is DamagedBlockError or a read
 * error, and readChunk then tries the ordinary way.
 */
function readInPlace(
  path: string,
  digest: Uint8Array,
  length: number,
  into: Uint8Array,
): Uint8Array {
  const z = zstd()!;
  let region: Uint8Array | undefined;
  const packed = readChunkFile(path, (want, size) => {
    const start = Math.ceil(Math.max(0, length + inPlaceMargin(length) - size) / 4096) * 4096;
    if (start + want > into.length) return undefined;
    region = into.subarray(0, start + size); // the frame at its very end
    return into.subarray(start, start + want);
  });
  if (!region || packed.buffer !== into.buffer) {
    throw new DamagedBlockError(`chunk ${path} does not fit its block's buffer`, path);
  }
  let n: number;
  try {
    n = z.decompress(packed, region);
  } catch {
    throw new DamagedBlockError(`chunk ${path} is corrupt: cannot decompress`, path);
  }
  const data = into.subarray(0, n);
  prove(n, length, createHash("sha256").update(data).digest(), digest, path);
  return data;
}

/** Throws DamagedBlockError unless a chunk decoded to `length` bytes hashing to `digest`. */
function prove(n: number, length: number, sum: Uint8Array, digest: Uint8Array, where: string) {
  if (n !== length) {
    throw new DamagedBlockError(
      `chunk ${where} is corrupt: ${n} bytes instead of ${length}`,
      where,
    );
  }
  if (!sameDigest(sum, digest)) {
    throw new DamagedBlockError(`chunk ${where} is corrupt: hash mismatch`, where);
  }
}

/**
 * A chunk's content (`packed`: its file's or object's bytes), proven to be `length` bytes
 * hashing to `digest`; anything else throws DamagedBlockError naming `where`. The bytes land
 * in `into` when given (and large enough), else in a buffer the next call reuses.
 */
export function unpackBlock(
  packed: Uint8Array,
  digest: Uint8Array,
  length: number,
  where: string,
  into?: Uint8Array,
): Uint8Array {
  // Not the caller's: this thread's scratch buffer (util/native/buffer.ts).
  const target = into && into.length >= length ? into : scratchBuffer(length);
  const data = decode(packed, length, target, where);
  prove(data.length, length, createHash("sha256").update(data).digest(), digest, where);
  return data;
}

/** Decodes a frame into `target` (at least `expected` bytes); more than that is damage. */
function decode(
  packed: Uint8Array,
  expected: number,
  target: Uint8Array,
  where: string,
): Uint8Array {
  const z = zstd();
  if (z) {
    try {
      return target.subarray(0, z.decompress(packed, target.subarray(0, expected)));
    } catch (e) {
      if (!(e instanceof ZstdError)) throw e;
      throw new DamagedBlockError(`chunk ${where} is corrupt: cannot decompress`, where);
    }
  }
  const stored = storedFrame(packed, expected, target);
  if (stored) return stored;
  let fresh: Uint8Array;
  try {
    fresh = zlib.zstdDecompressSync(packed, { chunkSize: ZSTD_CHUNK });
  } catch {
    throw new DamagedBlockError(`chunk ${where} is corrupt: cannot decompress`, where);
  }
  if (fresh.length > target.length) return fresh; // reported by the length check
  // Into the caller's buffer or ours, and zlib's 4 MiB freed at once: no garbage per chunk.
  target.set(fresh);
  const n = fresh.length;
  free(fresh);
  return target.subarray(0, n);
}

/**
 * Proves a chunk's content without keeping it (verification, scrub): the pieces of a stored
 * frame are hashed where they lie, without the copy that readChunk makes; other frames are
 * decompressed. Throws DamagedBlockError like readChunk.
 */
export function verifyChunk(chunksDir: string, digest: Uint8Array, length: number): void {
  const path = chunkPath(chunksDir, digest);
  const packed = readChunkFile(path);
  const hash = createHash("sha256");
  const n = walkStoredFrame(packed, length, (piece) => hash.update(piece), (byte, size) => {
    hash.update(new Uint8Array(size).fill(byte));
  });
  if (n === undefined) {
    // Compressed: decoded from the bytes just read (reading the file again cost a second read
    // of every compressed chunk: 547 of 2739 MiB in a 4 GiB backup's read-back).
    unpackBlock(packed, digest, length, path);
    return;
  }
  prove(n, length, hash.digest(), digest, path);
}

/**
 * Moves chunk files that fail their hash check aside to `<name>.corrupt` (kept as evidence,
 * never read, ignored by GC), so that the next backup writes them anew instead of
 * deduplicating against them — which also heals older revisions that use the same block.
 * Call only under the job's exclusive backup lock. Returns the paths moved.
 */
export function quarantineCorruptChunks(
  chunksDir: string,
  chunks: { digest: Uint8Array; length: number }[],
): string[] {
  const moved: string[] = [];
  for (const { digest, length } of chunks) {
    const path = chunkPath(chunksDir, digest);
    if (!fs.existsSync(path)) continue;
    try {
      readChunk(chunksDir, digest, length);
    } catch {
      try {
        fs.renameSync(path, `${path}.corrupt`);
        moved.push(path);
      } catch {
        // e.g. immutable: it stays, and verification keeps failing on it (never wrong data)
      }
    }
  }
  return moved;
}
