/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Data-path Worker: positional reads into page-aligned buffers, zero detection, SHA-256,
 * zstd, and writes into the store — so the coordinating thread never touches block data.
 */
import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { alignedBuffer } from "../util/fs.ts";
import { punchHole } from "../util/fallocate.ts";
import { released } from "../util/gc.ts";
import { directAligned, openDirect, pwriteAll } from "../util/directio.ts";
import { BLOCK_SIZE, hex, sameDigest } from "../repo/index_file.ts";
import { chunkExists, readChunk, writeChunk } from "../store/chunkfile.ts";
import type {
  ApplyBlock,
  ApplyResult,
  BackupBlock,
  BackupResult,
  CheckBlock,
  CheckResult,
  ReadBlock,
  ReadResult,
  Request,
} from "./protocol.ts";

const buf = alignedBuffer(BLOCK_SIZE);
const buf2 = alignedBuffer(BLOCK_SIZE);
const zeros = new Uint8Array(BLOCK_SIZE);
const fds = new Map<string, number>();

function fd(path: string, flags: "r" | "r+"): number {
  const key = `${flags}:${path}`;
  let f = fds.get(key);
  if (f === undefined) {
    f = fs.openSync(path, flags);
    fds.set(key, f);
  }
  return f;
}

function preadFull(f: number, into: Uint8Array, length: number, offset: number): Uint8Array {
  let got = 0;
  while (got < length) {
    const n = fs.readSync(f, into, got, length - got, offset + got);
    if (n === 0) break; // short file: the rest reads as zeros
    got += n;
  }
  if (got < length) into.fill(0, got, length);
  return into.subarray(0, length);
}

const direct = new Map<string, number | undefined>();

/**
 * Writes into an image or restore target: O_DIRECT when the block allows it (whole 4 KiB
 * units from a page-aligned buffer), which is several times faster than the page cache's
 * writeback here; the coordinator fsyncs the file afterwards either way.
 */
function writeAt(path: string, data: Uint8Array, offset: number): void {
  if (!direct.has(path)) direct.set(path, openDirect(path));
  const dfd = direct.get(path);
  if (dfd !== undefined && directAligned(data, offset)) return pwriteAll(dfd, data, offset);
  if (dfd !== undefined && offset % 4096 === 0 && data.length % 4096 === 0) {
    // An unaligned buffer (e.g. zstd output): copy into our aligned one.
    const copy = buf2.subarray(0, data.length);
    copy.set(data);
    return pwriteAll(dfd, copy, offset);
  }
  pwriteAll(fd(path, "r+"), data, offset);
}

const zeroBuf = Buffer.alloc(BLOCK_SIZE);

/** memcmp against a zero block (native; a JS loop over the words is several times slower). */
export function isZero(data: Uint8Array): boolean {
  // Random data differs in the first bytes: answer without touching the rest.
  if (data.length > 0 && (data[0] !== 0 || data[data.length - 1] !== 0)) return false;
  const view = Buffer.from(data.buffer, data.byteOffset, data.length);
  return view.equals(zeroBuf.subarray(0, data.length));
}

function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

function backup(m: BackupBlock): BackupResult {
  const data = preadFull(fd(m.source, "r"), buf, m.length, m.offset);
  let parent = m.parentDigest;
  if (parent === undefined && m.parentImage) {
    const old = preadFull(fd(m.parentImage, "r"), buf2, m.length, m.offset);
    parent = isZero(old) ? null : sha256(old);
  }
  return store(m, data, parent);
}

/** Stores one block whose content is known: hole, unchanged, or written (design D4). */
function store(
  m: { offset: number; length: number; store: BackupBlock["store"] },
  data: Uint8Array,
  parent: Uint8Array | null | undefined,
): BackupResult {
  if (isZero(data)) {
    if (m.store.backend === "cow" && parent !== null) {
      // The clone carries the parent's data here: make it a hole again.
      const t = fd(m.store.image, "r+");
      if (!punchHole(t, m.offset, m.length)) pwriteAll(t, zeros.subarray(0, m.length), m.offset);
    }
    return { kind: "zero", digest: null, stored: 0 };
  }
  const digest = sha256(data);
  if (parent && sameDigest(parent, digest)) {
    // Unchanged; but a chunk that was lost or moved aside as corrupt is stored anew.
    if (m.store.backend === "cow" || chunkExists(m.store.chunks, digest)) {
      return { kind: "same", digest, stored: 0 };
    }
  }
  if (m.store.backend === "cow") {
    writeAt(m.store.image, data, m.offset);
    return { kind: "written", digest, stored: m.length };
  }
  const stored = writeChunk(m.store.chunks, digest, data);
  return { kind: stored ? "written" : "dedup", digest, stored };
}

function apply(m: ApplyBlock): ApplyResult {
  let data = m.data.subarray(0, m.length);
  const whole = m.uncovered.length === 1 && m.uncovered[0][0] === 0 &&
    m.uncovered[0][1] >= m.length;
  if (whole && (m.base === "zero" || !m.parentDigest)) {
    data = zeros.subarray(0, m.length); // nothing arrived for this block: it reads as zeros
  } else if (m.uncovered.length) {
    // The buffer holds only what the stream covered; the rest is the parent's or zeros.
    for (const [at, len] of m.uncovered) data.fill(0, at, at + len);
    if (m.base === "parent" && m.parentDigest) {
      let old: Uint8Array;
      if (m.store.backend === "cow") {
        // The new image is a clone of the parent: its bytes are the parent's.
        old = preadFull(fd(m.store.image, "r"), buf2, m.length, m.offset);
      } else {
        old = readChunk(m.store.chunks, m.parentDigest, m.parentLength);
      }
      for (const [at, len] of m.uncovered) {
        const end = Math.min(at + len, old.length);
        if (end > at) data.set(old.subarray(at, end), at);
      }
    }
  }
  const result = store(m, data, m.parentDigest);
  return { ...result, buffer: m.data };
}

/** A block of the store; chunks are decoded straight into `into` when given. */
function readStored(
  m: { offset: number; length: number; store: ReadBlock["store"] },
  digest: Uint8Array | null | undefined,
  into?: Uint8Array,
): Uint8Array {
  if (m.store.backend === "cow") return preadFull(fd(m.store.image, "r"), buf, m.length, m.offset);
  if (!digest) return zeros.subarray(0, m.length);
  return readChunk(m.store.chunks, digest, m.length, into);
}

function check(m: CheckBlock): CheckResult {
  const data = readStored(m, m.digest);
  if (m.digest === null) {
    return isZero(data) ? { ok: true } : { ok: false, reason: "expected zeros, found data" };
  }
  const got = sha256(data);
  if (!sameDigest(got, m.digest)) {
    return {
      ok: false,
      reason: `stored ${hex(got).slice(0, 16)}…, source ${hex(m.digest).slice(0, 16)}…`,
    };
  }
  return { ok: true };
}

function read(m: ReadBlock): ReadResult {
  let data: Uint8Array;
  let zero: boolean;
  if (m.digest === null) {
    data = zeros.subarray(0, m.length);
    zero = true;
  } else {
    data = readStored(m, m.digest, m.into);
    if (m.digest !== undefined && m.store.backend === "cow") {
      const got = sha256(data);
      if (!sameDigest(got, m.digest)) {
        throw new Error(
          `image ${m.store.image} is corrupt at offset ${m.offset}: block does not match its index`,
        );
      }
      zero = false;
    } else {
      zero = m.digest === undefined ? isZero(data) : false;
    }
  }
  if (m.out) {
    if (!zero || m.out.writeZeros) writeAt(m.out.path, data, m.offset);
    return { zero };
  }
  if (zero) return { zero };
  if (m.into && m.into.length >= data.length) {
    if (data.buffer !== m.into.buffer) m.into.set(data);
    return { data: m.into.subarray(0, data.length), zero };
  }
  released(data.length);
  return { data: data.slice(), zero };
}

self.onmessage = (ev: MessageEvent<{ id: number; req: Request }>) => {
  const { id, req } = ev.data;
  try {
    let result: unknown;
    if (req.op === "backup") result = backup(req);
    else if (req.op === "check") result = check(req);
    else if (req.op === "read") result = read(req);
    else if (req.op === "apply") result = apply(req);
    else {
      for (const f of fds.values()) fs.closeSync(f);
      fds.clear();
      for (const f of direct.values()) if (f !== undefined) fs.closeSync(f);
      direct.clear();
      result = null;
    }
    // Block buffers go back by transfer, not as a 4 MiB structured-clone copy each.
    const transfer = (result as ReadResult | null)?.data
      ? [(result as ReadResult).data!.buffer]
      : (result as ApplyResult | null)?.buffer
      ? [(result as ApplyResult).buffer.buffer]
      : [];
    self.postMessage({ id, result }, { transfer: transfer as Transferable[] });
  } catch (e) {
    const err = e as Error & { code?: string };
    self.postMessage({ id, error: err.message ?? String(e), code: err.code });
  }
};
