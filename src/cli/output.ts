/** Synchronous writes to stdout/stderr, so output never interleaves with log lines. */
import { writeAllToSync } from "../util/io.ts";

const enc = new TextEncoder();

function writeAll(out: { writeSync(p: Uint8Array): number }, text: string): void {
  writeAllToSync(out, enc.encode(text));
}

export function print(text: string): void {
  writeAll(Deno.stdout, text.endsWith("\n") ? text : text + "\n");
}

export function printErr(text: string): void {
  writeAll(Deno.stderr, text.endsWith("\n") ? text : text + "\n");
}
