/** Synchronous writes to stdout/stderr, so output never interleaves with log lines. */
const enc = new TextEncoder();

function writeAll(out: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = enc.encode(text);
  let off = 0;
  while (off < bytes.length) off += out.writeSync(bytes.subarray(off));
}

export function print(text: string): void {
  writeAll(Deno.stdout, text.endsWith("\n") ? text : text + "\n");
}

export function printErr(text: string): void {
  writeAll(Deno.stderr, text.endsWith("\n") ? text : text + "\n");
}
