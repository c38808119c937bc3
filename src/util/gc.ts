/**
 * Bounded memory on the data path. zstd and chunk reads allocate a fresh 4 MiB buffer per
 * block; V8 frees them lazily, so RSS grew to ~400 MiB per GiB processed. Collecting after
 * every 64 MiB of such garbage keeps peak memory flat (~225 MiB for a first chunked backup).
 *
 * Deno's `gc` from node:vm ignores `{ type: "minor" }`: every call is a low-memory
 * notification, i.e. two full mark-compacts (~10-25 ms in a Worker). Every 32 MiB, a 2 GiB
 * chunked restore to /dev/null took 4.2-4.7 s instead of 2.7-2.9 s (1.9 s without any),
 * for 50-80 MiB less peak RSS.
 */
import v8 from "node:v8";
import vm from "node:vm";

const LIMIT = 64 * 1024 * 1024;
let pending = 0;

const collect: ((opts?: { type: string }) => void) | undefined = (() => {
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc");
    return typeof gc === "function" ? gc as (opts?: { type: string }) => void : undefined;
  } catch {
    return undefined; // no gc hook: memory is still bounded, just higher
  }
})();

/**
 * Frees a buffer's memory now: detaching its ArrayBuffer (transfer to length 0) releases
 * the backing store at once, instead of whenever V8 next collects. For buffers that nothing
 * else views, e.g. the output of a zlib call once copied or written: 200 decompressions of 4
 * MiB grew RSS by 200 MiB without it, by 6 MiB with it (Deno 2.9).
 */
export function free(view: Uint8Array): void {
  const buffer = view.buffer as ArrayBuffer & { transfer?: (n: number) => ArrayBuffer };
  if (!buffer.resizable && buffer.transfer) buffer.transfer(0);
}

/** Records `bytes` of short-lived buffers; collects once enough piled up. */
export function released(bytes: number): void {
  pending += bytes;
  if (pending >= LIMIT && collect) {
    pending = 0;
    collect({ type: "minor" });
  }
}
