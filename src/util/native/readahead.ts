/**
 * Read-ahead for sources read block by block from several Workers. Each Worker reads every
 * other 4 MiB block with pread(2), so no descriptor looks sequential to the kernel; asking
 * for the next blocks (POSIX_FADV_WILLNEED starts their reads without waiting) keeps the disk
 * busy while the Workers hash.
 */
import { tryLibc } from "./libc.ts";

const POSIX_FADV_WILLNEED = 3;
/**
 * The kernel reads at most the device's read-ahead size (`read_ahead_kb`, often 128 KiB) per
 * hint, so a larger range is hinted in pieces of that size.
 */
const PIECE = 128 * 1024;

/** Starts reading `[offset, offset + length)` of `fd` into the page cache; best effort. */
export function readAhead(fd: number, offset: number, length: number): void {
  const lib = tryLibc();
  if (!lib) return;
  for (let at = offset; at < offset + length; at += PIECE) {
    const n = Math.min(PIECE, offset + length - at);
    if (lib.posix_fadvise(fd, BigInt(at), BigInt(n), POSIX_FADV_WILLNEED) !== 0) return;
  }
}
