/** Test images shared by the benchmarks: made the same way, changed the same way. */

const BLOCK = 4 * 1024 * 1024;

/** Writes a `size`-byte image: every 4th block zero (a hole), the rest random (incompressible). */
export async function makeImage(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const buf = new Uint8Array(BLOCK);
  for (let i = 0; i < size / BLOCK; i++) {
    if (i % 4 === 3) continue;
    for (let o = 0; o < BLOCK; o += 65536) crypto.getRandomValues(buf.subarray(o, o + 65536));
    await f.seek(i * BLOCK, Deno.SeekMode.Start);
    await f.write(buf);
  }
  await f.truncate(size);
  f.close();
}

/** Rewrites 4 KiB in 1 % of the image's non-zero blocks; returns how many blocks changed. */
export async function changeOnePercent(path: string, size: number, seed: number): Promise<number> {
  const f = await Deno.open(path, { write: true });
  const blocks = size / BLOCK;
  const n = Math.max(1, Math.round(blocks * 0.01));
  for (let k = 0; k < n; k++) {
    let i = Math.floor((k + 0.5) * blocks / n);
    if (i % 4 === 3) i--;
    await f.seek(i * BLOCK + 8192, Deno.SeekMode.Start);
    await f.write(new Uint8Array(4096).fill(seed + k));
  }
  f.close();
  return n;
}
