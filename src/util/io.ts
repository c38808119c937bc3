/** Writing a whole buffer through writers that may take less than all of it per call. */

/** Writes all of `data` to an async writer (a file, a socket, stdout). */
export async function writeAllTo(
  out: { write(p: Uint8Array): Promise<number> },
  data: Uint8Array,
): Promise<void> {
  let off = 0;
  while (off < data.length) off += await out.write(data.subarray(off));
}

/** Writes all of `data` to a synchronous writer (stdout, stderr). */
export function writeAllToSync(out: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += out.writeSync(data.subarray(off));
}
