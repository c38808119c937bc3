/**
 * Hole punching through libc's fallocate (Deno has no API for it). Where FFI or the
 * filesystem refuses, callers fall back to writing zeros.
 */
import { tryLibc } from "./libc.ts";

const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;

/** Punches a hole into an open file descriptor; false when not possible here. */
export function punchHole(fd: number, offset: number, length: number): boolean {
  if (length <= 0) throw new RangeError("punchHole: length must be > 0");
  const lib = tryLibc();
  if (!lib) return false;
  return lib.fallocate(
    fd,
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    BigInt(offset),
    BigInt(length),
  ) === 0;
}
