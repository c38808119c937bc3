// Data extents of sparse files (util/native/extents.ts): the pure block map with exact values,
// and lseek(SEEK_DATA/SEEK_HOLE) on real sparse files.
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { join } from "node:path";
import { blocksWithData, dataExtents } from "../../src/util/native/extents.ts";
import { tempDir } from "../helpers.ts";

const K = 4096;

Deno.test("blocksWithData: any byte of data marks its block; holes stay 0", () => {
  assertEquals([...blocksWithData([], 10 * K, 4 * K)], [0, 0, 0]);
  assertEquals([...blocksWithData([[0, 1]], 10 * K, 4 * K)], [1, 0, 0]);
  assertEquals([...blocksWithData([[4 * K - 1, 4 * K + 1]], 10 * K, 4 * K)], [1, 1, 0]);
  assertEquals([...blocksWithData([[8 * K, 10 * K]], 10 * K, 4 * K)], [0, 0, 1]);
  assertEquals([...blocksWithData([[K, 2 * K], [9 * K, 10 * K]], 10 * K, 4 * K)], [1, 0, 1]);
});

Deno.test("dataExtents: a sparse file's data ranges, a file of holes, an empty file", async () => {
  const dir = await tempDir();
  try {
    const sparse = join(dir, "sparse");
    const f = await Deno.open(sparse, { write: true, create: true });
    await f.truncate(64 * 1024 * 1024);
    await f.seek(8 * 1024 * 1024, Deno.SeekMode.Start);
    await f.write(new Uint8Array(K).fill(1));
    await f.seek(40 * 1024 * 1024, Deno.SeekMode.Start);
    await f.write(new Uint8Array(2 * K).fill(2));
    f.close();
    const ext = dataExtents(sparse, 64 * 1024 * 1024)!;
    // Filesystems may round extents to their block size; the data is inside them.
    assertEquals(ext.length, 2);
    assertEquals(ext[0][0] <= 8 * 1024 * 1024 && ext[0][1] >= 8 * 1024 * 1024 + K, true);
    assertEquals(ext[1][0] <= 40 * 1024 * 1024 && ext[1][1] >= 40 * 1024 * 1024 + 2 * K, true);
    assertEquals(
      [...blocksWithData(ext, 64 * 1024 * 1024, 4 * 1024 * 1024)].reduce((a, b) => a + b),
      2,
    );

    const holes = join(dir, "holes");
    await Deno.writeFile(holes, new Uint8Array());
    await Deno.truncate(holes, 16 * 1024 * 1024);
    assertEquals(dataExtents(holes, 16 * 1024 * 1024), []);
    assertEquals(dataExtents(holes, 0), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
