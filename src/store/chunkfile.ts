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
import { hex, sameDigest } from "../repo/index_file.ts";
import { released } from "../util/gc.ts";

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
  const packed = zlib.zstdCompressSync(data, {
    chunkSize: ZSTD_CHUNK,
    params: { [zlib.constants.ZSTD_c_compressionLevel]: 1 },
  });
  released(packed.length);
  const tmp = join(
    dir,
    `.${path.slice(dir.length + 1)}.tmp-${Math.random().toString(36).slice(2)}`,
  );
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    let off = 0;
    while (off < packed.length) off += fs.writeSync(fd, packed, off, packed.length - off);
    fs.fdatasyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.chmodSync(tmp, 0o440);
  fs.renameSync(tmp, path);
  return packed.length;
}

/** One output buffer per (de)compression instead of node's default 16 KiB pieces. */
const ZSTD_CHUNK = 4 * 1024 * 1024 + 64 * 1024;
let readBuf = new Uint8Array(ZSTD_CHUNK);

/** Reads a chunk, decompresses it and proves its content hash; anything else is an error. */
export function readChunk(chunksDir: string, digest: Uint8Array, length: number): Uint8Array {
  const path = chunkPath(chunksDir, digest);
  let packed: Uint8Array;
  try {
    const fd = fs.openSync(path, "r");
    try {
      const size = fs.fstatSync(fd).size;
      if (size > readBuf.length) readBuf = new Uint8Array(size);
      let got = 0;
      while (got < size) {
        const n = fs.readSync(fd, readBuf, got, size - got, got);
        if (n === 0) break;
        got += n;
      }
      packed = readBuf.subarray(0, got);
    } finally {
      fs.closeSync(fd);
    }
  } catch (e) {
    const why = (e as { code?: string }).code === "ENOENT" ? "missing" : String(e);
    throw new BackyError(`chunk ${path} is unreadable: ${why}`);
  }
  let data: Uint8Array;
  try {
    data = zlib.zstdDecompressSync(packed, { chunkSize: ZSTD_CHUNK });
  } catch {
    throw new BackyError(`chunk ${path} is corrupt: cannot decompress`);
  }
  released(data.length);
  if (data.length !== length) {
    throw new BackyError(`chunk ${path} is corrupt: ${data.length} bytes instead of ${length}`);
  }
  const sum = createHash("sha256").update(data).digest();
  if (!sameDigest(sum, digest)) throw new BackyError(`chunk ${path} is corrupt: hash mismatch`);
  return data;
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
      fs.renameSync(path, `${path}.corrupt`);
      moved.push(path);
    }
  }
  return moved;
}
