import { deepStrictEqual as assertEquals, ok, throws } from "node:assert/strict";
import * as zlib from "node:zlib";
import { zstd, ZstdError } from "../../src/util/native/zstd.ts";
import { randomBytes } from "../helpers.ts";

const MiB = 1024 * 1024;
const z = zstd();
const ignore = z ? false : true;
const text = () => new TextEncoder().encode("backy block ".repeat(400_000)).subarray(0, 4 * MiB);

Deno.test({
  name: "libzstd: frames round-trip, and node:zlib reads them and writes what it reads",
  ignore,
  fn() {
    for (const data of [text(), randomBytes(4 * MiB, 3), randomBytes(1, 4)]) {
      const frame = new Uint8Array(z!.bound(data.length));
      const n = z!.compress(data, frame, 1);
      ok(n > 0 && n <= frame.length);
      assertEquals(new Uint8Array(zlib.zstdDecompressSync(frame.subarray(0, n))), data);
      const back = new Uint8Array(data.length);
      assertEquals(z!.decompress(frame.subarray(0, n), back), data.length);
      assertEquals(back, data);
      const fromNode = zlib.zstdCompressSync(data);
      back.fill(0);
      assertEquals(z!.decompress(fromNode, back), data.length);
      assertEquals(back, data);
    }
    // Text compresses (level 1 on repeated words: far below half).
    const t = text();
    ok(z!.compress(t, new Uint8Array(z!.bound(t.length)), 1) < t.length / 10);
  },
});

Deno.test({
  name: "libzstd: damaged frames and content larger than the buffer are errors, never bytes",
  ignore,
  fn() {
    const data = text();
    const frame = new Uint8Array(z!.bound(data.length));
    const n = z!.compress(data, frame, 1);
    const out = new Uint8Array(data.length);
    throws(() => z!.decompress(frame.subarray(0, n - 10), out), ZstdError);
    throws(() => z!.decompress(frame.subarray(0, n), out.subarray(0, data.length - 1)), (e) => {
      ok(e instanceof ZstdError);
      ok(/zstd decompression failed: .+/.test(e.message), e.message);
      return true;
    });
    const garbage = randomBytes(1000, 5);
    throws(() => z!.decompress(garbage, out), ZstdError);
    // Two frames back to back decode as their concatenation (zstd's own rule).
    const two = new Uint8Array(2 * n);
    two.set(frame.subarray(0, n));
    two.set(frame.subarray(0, n), n);
    const both = new Uint8Array(2 * data.length);
    assertEquals(z!.decompress(two, both), 2 * data.length);
    assertEquals(both.subarray(data.length), data);
  },
});
