/**
 * /proc and /sys files through libc: Deno refuses every path there unless run with
 * --allow-all (even with --allow-read/--allow-write), and backy runs with scoped permissions.
 */
import { BackyError } from "../errors.ts";
import { libc } from "./libc.ts";
import { closeRaw, O_CLOEXEC, O_RDONLY, O_WRONLY, openRaw } from "./open.ts";

/** The whole text of a /proc or /sys file (e.g. /proc/self/mountinfo). */
export function readProcFile(path: string): string {
  const fd = openRaw(path, O_RDONLY | O_CLOEXEC);
  try {
    const lib = libc(`reading ${path}`);
    const parts: Uint8Array[] = [];
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = Number(lib.readNow(fd, buf, BigInt(buf.length)));
      if (n < 0) throw new BackyError(`cannot read ${path}`);
      if (n === 0) break;
      parts.push(buf.slice(0, n));
    }
    const dec = new TextDecoder();
    return parts.map((p, i) => dec.decode(p, { stream: i < parts.length - 1 })).join("");
  } finally {
    closeRaw(fd);
  }
}

/** Writes a setting (e.g. a /sys/class/bdi/.../read_ahead_kb value) in one write. */
export function writeProcFile(path: string, text: string): void {
  const fd = openRaw(path, O_WRONLY | O_CLOEXEC);
  try {
    const data = new TextEncoder().encode(text);
    const n = Number(libc(`writing ${path}`).writeNow(fd, data, BigInt(data.length)));
    if (n !== data.length) throw new BackyError(`cannot write ${path}`);
  } finally {
    closeRaw(fd);
  }
}
