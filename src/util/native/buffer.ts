/**
 * Page-aligned buffers, the one kind the data path uses. A plain `new Uint8Array(n)` starts
 * 16 bytes past a page and makes reads about 4x slower (platform notes); O_DIRECT needs the
 * alignment outright. These are views into an ordinary (non-resizable) ArrayBuffer one page
 * larger, so they can also go to libc calls on the blocking pool (pipes) and be transferred
 * to and from Workers (the view's offset travels with it).
 */
const PAGE = 4096;

/** `size` bytes starting on a page boundary, zeroed. */
export function alignedBuffer(size: number): Uint8Array {
  const raw = new Uint8Array(size + PAGE);
  const skip = (PAGE - (address(raw) % PAGE)) % PAGE;
  return raw.subarray(skip, skip + size);
}

/** Whether a view starts on a page boundary (cost: ~0.4 µs). */
export function isPageAligned(data: Uint8Array): boolean {
  return data.length === 0 || address(data) % PAGE === 0;
}

function address(data: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data as Uint8Array<ArrayBuffer>)));
}

let scratch: Uint8Array | undefined;

/**
 * This thread's scratch buffer of at least `size` bytes, page-aligned: for data that lives
 * within one synchronous step only (a source block on its way into the store, a chunk
 * decoded to be hashed or copied). The data-path modules share it, so a Worker holds one
 * such 4 MiB buffer instead of one per module; whoever uses it must be done with it
 * before calling anything else that might.
 */
export function scratchBuffer(size: number): Uint8Array {
  if (!scratch || scratch.length < size) scratch = alignedBuffer(size);
  return scratch;
}
