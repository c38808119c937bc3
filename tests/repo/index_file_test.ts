/** Block index `<id>.index` (design D3): exact layout, round trip, corruption detection. */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { createHash } from "node:crypto";
import { BLOCK_SIZE, blockCount, BlockIndex, hex, sameDigest } from "../../src/repo/index_file.ts";
import { BackyError } from "../../src/util/errors.ts";

const sha = (s: string) => new Uint8Array(createHash("sha256").update(s).digest());

/** 2 full blocks + 5 bytes: block 0 data, block 1 zero, block 2 (short) data. */
function sample(): BlockIndex {
  const idx = BlockIndex.empty(2 * BLOCK_SIZE + 5);
  idx.set(0, sha("a"));
  idx.set(2, sha("c"));
  return idx;
}

Deno.test("block counts and lengths", () => {
  assertEquals(BLOCK_SIZE, 4 * 1024 * 1024);
  assertEquals(blockCount(0), 0);
  assertEquals(blockCount(1), 1);
  assertEquals(blockCount(BLOCK_SIZE), 1);
  assertEquals(blockCount(BLOCK_SIZE + 1), 2);
  assertEquals(blockCount(10, 4), 3);
  const idx = sample();
  assertEquals(idx.count, 3);
  assertEquals([idx.blockLength(0), idx.blockLength(1), idx.blockLength(2)], [
    BLOCK_SIZE,
    BLOCK_SIZE,
    5,
  ]);
  assertEquals([idx.isZero(0), idx.isZero(1), idx.isZero(2)], [false, true, false]);
  idx.set(0, null);
  assertEquals(idx.isZero(0), true);
});

Deno.test("encoding: header, digests, trailing SHA-256, byte for byte", () => {
  const bytes = sample().encode();
  assertEquals(bytes.length, 48 + 3 * 32 + 32);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assertEquals(new TextDecoder().decode(bytes.subarray(0, 8)), "BACKYIDX");
  assertEquals(view.getUint32(8, true), 1, "version");
  assertEquals(view.getUint32(12, true), BLOCK_SIZE);
  assertEquals(view.getBigUint64(16, true), BigInt(2 * BLOCK_SIZE + 5));
  assertEquals(view.getBigUint64(24, true), 3n);
  assertEquals(
    [...bytes.subarray(32, 48)],
    [...new TextEncoder().encode("sha256"), ...new Array(10).fill(0)],
  );
  assertEquals(hex(bytes.subarray(48, 80)), hex(sha("a")));
  assertEquals(hex(bytes.subarray(80, 112)), "00".repeat(32), "zero block");
  assertEquals(hex(bytes.subarray(112, 144)), hex(sha("c")));
  const sum = createHash("sha256").update(bytes.subarray(0, 144)).digest("hex");
  assertEquals(hex(bytes.subarray(144)), sum);
  assertEquals(
    hex(bytes.subarray(0, 16)),
    "4241434b59494458" + "01000000" + "00004000",
  );
});

Deno.test("decode(encode(x)) = x, and the empty image", () => {
  const idx = sample();
  const back = BlockIndex.decode(idx.encode(), "/j/x.index");
  assertEquals([back.size, back.blockSize, back.count], [idx.size, idx.blockSize, 3]);
  assertEquals(hex(back.digests), hex(idx.digests));
  assertEquals(sameDigest(back.digest(2), sha("c")), true);
  assertEquals(sameDigest(back.digest(2), sha("a")), false);
  const empty = BlockIndex.decode(BlockIndex.empty(0).encode(), "/j/e.index");
  assertEquals([empty.size, empty.count], [0, 0]);
});

Deno.test("every kind of damage is detected and names the file", () => {
  const good = sample().encode();
  const damaged = (f: (b: Uint8Array) => Uint8Array | void): Uint8Array => {
    const b = good.slice();
    return f(b) ?? b;
  };
  const setU32 = (b: Uint8Array, at: number, v: number) =>
    new DataView(b.buffer).setUint32(at, v, true);
  const setU64 = (b: Uint8Array, at: number, v: bigint) =>
    new DataView(b.buffer).setBigUint64(at, v, true);
  const cases: [Uint8Array, string][] = [
    [damaged((b) => void (b[60] ^= 1)), "checksum mismatch"], // a digest bit flip
    [damaged((b) => void (b[b.length - 1] ^= 0x80)), "checksum mismatch"], // the checksum
    [good.subarray(0, good.length - 1), "truncated"],
    [good.subarray(0, 100), "truncated"],
    [good.subarray(0, 10), "truncated"],
    [new Uint8Array(), "truncated"],
    [new Uint8Array([...good, 0]), "truncated"],
    [damaged((b) => void (b[0] = 0x62)), "bad magic"],
    [damaged((b) => setU32(b, 8, 2)), "unsupported version 2"],
    [damaged((b) => b.set(new TextEncoder().encode("md5\0\0\0"), 32)), "unsupported hash 'md5'"],
    [damaged((b) => setU64(b, 24, 4n)), "inconsistent header"],
    [damaged((b) => setU64(b, 16, BigInt(BLOCK_SIZE))), "inconsistent header"],
    [damaged((b) => setU32(b, 12, 0)), "inconsistent header"],
  ];
  for (const [bytes, why] of cases) {
    assertThrows(() => BlockIndex.decode(bytes, "/j/x.index"), (e: unknown) => {
      assertEquals(e instanceof BackyError, true);
      assertEquals((e as Error).message, `corrupt index file /j/x.index: ${why}`);
      return true;
    }, why);
  }
});
