/**
 * Hole punching through libc's fallocate (Deno has no API for it). Needs --allow-ffi;
 * where FFI or the filesystem refuses, callers fall back to writing zeros.
 */
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;

type Libc = {
  symbols: { fallocate: (fd: number, mode: number, off: bigint, len: bigint) => number };
};
let libc: Libc | null | undefined;

function load(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
    }) as unknown as Libc;
  } catch {
    libc = null;
  }
  return libc;
}

/** Punches a hole into an open file descriptor; false when not possible here. */
export function punchHole(fd: number, offset: number, length: number): boolean {
  if (length <= 0) throw new RangeError("punchHole: length must be > 0");
  const lib = load();
  if (!lib) return false;
  return lib.symbols.fallocate(
    fd,
    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    BigInt(offset),
    BigInt(length),
  ) === 0;
}
