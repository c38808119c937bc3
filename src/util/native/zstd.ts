/**
 * zstd through the system's libzstd (FFI), into and out of buffers the caller owns.
 * node:zlib's zstd returns a fresh buffer per call: a page-faulting 4 MiB allocation and a
 * copy per block, and native contexts that only a garbage collection frees. Here one
 * context per thread is reused and the output lands where it is used (a page-aligned
 * write buffer, a restore's block buffer): decompression 2.6 ms per 4 MiB text block
 * instead of 4.2 ms, compression 12.5 ms instead of 15-16 ms (docs/benchmarks.md).
 * libzstd1 is on every Debian system (dpkg depends on it); where it cannot be loaded (no
 * --allow-ffi, another system), `zstd()` is undefined and callers use node:zlib, which reads
 * and writes the same standard frames.
 */

/** zstd's largest block (RFC 8878: Block_Maximum_Size is at most 128 KiB). */
export const ZSTD_BLOCK_MAX = 128 * 1024;

const symbols = {
  ZSTD_createCCtx: { parameters: [], result: "pointer" },
  ZSTD_createDCtx: { parameters: [], result: "pointer" },
  ZSTD_compressCCtx: {
    parameters: ["pointer", "buffer", "usize", "buffer", "usize", "i32"],
    result: "usize",
  },
  ZSTD_decompressDCtx: {
    parameters: ["pointer", "buffer", "usize", "buffer", "usize"],
    result: "usize",
  },
  ZSTD_compressBound: { parameters: ["usize"], result: "usize" },
  ZSTD_isError: { parameters: ["usize"], result: "u32" },
  ZSTD_getErrorName: { parameters: ["usize"], result: "pointer" },
  ZSTD_versionNumber: { parameters: [], result: "u32" },
} as const;

/** One thread's compressor and decompressor. */
export interface Zstd {
  /** Upper bound of a compressed frame of `size` bytes. */
  bound(size: number): number;
  /** Compresses `src` into `dst` (at least bound(src.length)); returns the frame's length. */
  compress(src: Uint8Array, dst: Uint8Array, level: number): number;
  /**
   * Decompresses all frames in `src` into `dst`; returns the content's length. Throws
   * ZstdError for anything that is not valid zstd or would not fit into `dst`.
   */
  decompress(src: Uint8Array, dst: Uint8Array): number;
  /**
   * Whether decompress() may be given a frame that lies at the end of its own output buffer
   * (zstd documents in-place decompression with ZSTD_decompressionMargin, libzstd 1.5.4).
   */
  inPlace: boolean;
}

/** A frame that libzstd refused (corrupt, truncated, too large for the buffer). */
export class ZstdError extends Error {}

let loaded: Zstd | null | undefined;

/** This thread's libzstd, or undefined where it cannot be loaded. */
export function zstd(): Zstd | undefined {
  if (loaded === undefined) loaded = load();
  return loaded ?? undefined;
}

function load(): Zstd | null {
  let lib: Deno.DynamicLibrary<typeof symbols>["symbols"];
  try {
    lib = Deno.dlopen("libzstd.so.1", symbols).symbols;
  } catch {
    return null;
  }
  const cctx = lib.ZSTD_createCCtx();
  const dctx = lib.ZSTD_createDCtx();
  if (!cctx || !dctx) return null;
  const check = (r: number | bigint, what: string): number => {
    if (lib.ZSTD_isError(BigInt(r))) {
      const name = lib.ZSTD_getErrorName(BigInt(r));
      const why = name ? new Deno.UnsafePointerView(name).getCString() : "error";
      throw new ZstdError(`zstd ${what} failed: ${why}`);
    }
    return Number(r);
  };
  return {
    inPlace: lib.ZSTD_versionNumber() >= 10504,
    bound: (size) => Number(lib.ZSTD_compressBound(BigInt(size))),
    compress: (src, dst, level) =>
      check(
        lib.ZSTD_compressCCtx(
          cctx,
          dst as Uint8Array<ArrayBuffer>,
          BigInt(dst.length),
          src as Uint8Array<ArrayBuffer>,
          BigInt(src.length),
          level,
        ),
        "compression",
      ),
    decompress: (src, dst) =>
      check(
        lib.ZSTD_decompressDCtx(
          dctx,
          dst as Uint8Array<ArrayBuffer>,
          BigInt(dst.length),
          src as Uint8Array<ArrayBuffer>,
          BigInt(src.length),
        ),
        "decompression",
      ),
  };
}

/** Runs `fn` as on a system without libzstd (tests of the node:zlib path). */
export function withoutLibzstd<T>(fn: () => T): T {
  const was = loaded;
  loaded = null;
  try {
    return fn();
  } finally {
    loaded = was;
  }
}
