import { deepStrictEqual as assertEquals, match as assertMatch, throws } from "node:assert/strict";
import { createHash } from "node:crypto";
import * as zlib from "node:zlib";
import {
  chunkPath,
  looksIncompressible,
  rawFrame,
  readChunk,
  verifyChunk,
  writeChunk,
} from "../../src/store/chunkfile.ts";
import { withoutLibzstd, zstd } from "../../src/util/native/zstd.ts";
import { alignedBuffer } from "../../src/util/native/buffer.ts";
import { inPlaceRoom } from "../../src/store/in_place.ts";
import { randomBytes } from "../helpers.ts";

const MiB = 1024 * 1024;
const sha = (d: Uint8Array) => new Uint8Array(createHash("sha256").update(d).digest());

function samples(): [string, Uint8Array][] {
  const random = randomBytes(4 * MiB, 7);
  const half = randomBytes(4 * MiB, 8);
  half.fill(0x55, 2 * MiB); // compressible second half: a mix of raw and compressed blocks
  const text = new TextEncoder().encode("backy ".repeat(300_000)).subarray(0, 1_500_001);
  return [["random", random], ["half compressible", half], ["short text", text]];
}

/** Both codecs: libzstd through FFI where it loads, node:zlib where it does not. */
const codecs: [string, <T>(fn: () => T) => T][] = [
  ["node:zlib", withoutLibzstd],
  ["libzstd", (fn) => fn()],
];
const noLibzstd = !zstd();

for (const [codec, run] of codecs) {
  const other = codecs.find(([c]) => c !== codec)![1];
  Deno.test({
    name: `${codec}: chunks round-trip (raw-block and compressed frames), read by either codec`,
    ignore: noLibzstd,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "backy-chunks-" });
      try {
        for (const [name, data] of samples()) {
          const digest = sha(data);
          const written = run(() => writeChunk(dir, digest, data));
          const file = await Deno.readFile(chunkPath(dir, digest));
          assertEquals(written, file.length, name);
          // The file is a standard zstd frame (zstd -d can read it).
          assertEquals(new Uint8Array(zlib.zstdDecompressSync(file)), data, name);
          assertEquals(new Uint8Array(run(() => readChunk(dir, digest, data.length))), data, name);
          assertEquals(new Uint8Array(other(() => readChunk(dir, digest, data.length))), data);
          // Into a caller's buffer: the bytes land there.
          const into = new Uint8Array(4 * MiB);
          const got = run(() => readChunk(dir, digest, data.length, into));
          assertEquals(got.buffer, into.buffer, name);
          assertEquals(new Uint8Array(got), data, name);
          assertEquals(run(() => writeChunk(dir, digest, data)), 0, `${name}: deduplicated`);
          run(() => verifyChunk(dir, digest, data.length)); // proven without a throw
          other(() => verifyChunk(dir, digest, data.length));
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });

  Deno.test({
    name: `${codec}: a flipped byte or a cut in a stored or compressed chunk is reported`,
    ignore: noLibzstd,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "backy-chunks-" });
      try {
        for (const [name, data] of samples()) {
          const digest = sha(data);
          run(() => writeChunk(dir, digest, data));
          const path = chunkPath(dir, digest);
          const bytes = await Deno.readFile(path);
          await Deno.chmod(path, 0o640);
          bytes[Math.floor(bytes.length * 0.7)] ^= 0x01;
          await Deno.writeFile(path, bytes);
          // Verification (backups' read-back, verify, scrub) sees the same damage.
          for (const read of [readChunk, verifyChunk]) {
            throws(() => run(() => read(dir, digest, data.length)), (e: Error) => {
              assertMatch(e.message, new RegExp(`chunk ${path} is corrupt: `), name);
              return true;
            });
          }
          await Deno.writeFile(path, bytes.subarray(0, bytes.length >> 1)); // truncated
          throws(() => run(() => readChunk(dir, digest, data.length)), /is corrupt/, name);
          throws(() => run(() => verifyChunk(dir, digest, data.length)), /is corrupt/, name);
          // A valid frame of other content, longer than the block: never more than asked for.
          const longer = zlib.zstdCompressSync(new Uint8Array(data.length + 4096).fill(1));
          await Deno.writeFile(path, longer);
          throws(() => run(() => readChunk(dir, digest, data.length)), /is corrupt/, name);
          throws(() => run(() => verifyChunk(dir, digest, data.length)), /is corrupt/, name);
        }
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test("incompressible blocks are stored as zstd raw-block frames that zstd itself decodes", () => {
  for (const size of [4 * MiB, 4 * MiB - 1000, 128 * 1024, 1, 0]) {
    const data = randomBytes(size, size + 1);
    const frame = rawFrame(data);
    assertEquals(frame.length, 9 + 3 * Math.max(1, Math.ceil(size / (128 * 1024))) + size);
    assertEquals(new Uint8Array(zlib.zstdDecompressSync(frame)), data, `size ${size}`);
  }
});

Deno.test("the compressibility test: random data skips zstd, anything partly compressible not", () => {
  const random = randomBytes(4 * MiB, 11);
  assertEquals(looksIncompressible(random), true);
  const quarter = random.slice();
  quarter.fill(0, 3 * MiB); // a partly used block: the zeros compress
  assertEquals(looksIncompressible(quarter), false);
  const text = new TextEncoder().encode("backy ".repeat(800_000)).subarray(0, 4 * MiB);
  assertEquals(looksIncompressible(text), false);
  // Too small to sample: always compressed.
  assertEquals(looksIncompressible(random.subarray(0, 64 * 1024)), false);
});

Deno.test("an incompressible chunk costs its size plus frame headers, and reads back", async () => {
  const dir = await Deno.makeTempDir({ prefix: "backy-chunks-" });
  try {
    const data = randomBytes(4 * MiB, 12);
    const digest = sha(data);
    const written = writeChunk(dir, digest, data);
    assertEquals(written, 4 * MiB + 9 + 3 * 32);
    assertEquals((await Deno.stat(chunkPath(dir, digest))).size, written);
    assertEquals(new Uint8Array(readChunk(dir, digest, data.length)), data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "in place: a chunk is read and decoded inside a large enough buffer; damage still reported",
  ignore: !zstd()?.inPlace,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "backy-chunks-" });
  try {
    const cases: [string, Uint8Array][] = [...samples()];
    const text = new TextEncoder().encode("in place ".repeat(500_000)).subarray(0, 4 * MiB);
    cases.push(["text, written by node:zlib", text]);
    for (const [name, data] of cases) {
      const digest = sha(data);
      if (name.includes("node:zlib")) withoutLibzstd(() => writeChunk(dir, digest, data));
      else writeChunk(dir, digest, data);
      const into = alignedBuffer(inPlaceRoom(4 * MiB));
      const got = readChunk(dir, digest, data.length, into);
      assertEquals(got.buffer, into.buffer, name);
      assertEquals(got.byteOffset, into.byteOffset, name);
      assertEquals(new Uint8Array(got), data, name);
      // The frame was read into the buffer's tail (the ordinary way writes only the block).
      assertEquals(into.subarray(data.length).some((b) => b !== 0), true, `${name}: in place`);
    }
    // Damage: the in-place attempt fails, the ordinary read names it.
    const [, data] = cases[1];
    const path = chunkPath(dir, sha(data));
    const bytes = await Deno.readFile(path);
    bytes[Math.floor(bytes.length * 0.4)] ^= 0x04;
    await Deno.chmod(path, 0o640);
    await Deno.writeFile(path, bytes);
    throws(
      () => readChunk(dir, sha(data), data.length, alignedBuffer(inPlaceRoom(4 * MiB))),
      new RegExp(`chunk ${path} is corrupt: `),
    );
    // A buffer one byte short of the room: the ordinary way, same bytes.
    const [, random] = cases[0];
    const small = alignedBuffer(inPlaceRoom(random.length) - 1);
    const got = readChunk(dir, sha(random), random.length, small);
    assertEquals(new Uint8Array(got), random);
    assertEquals(small.subarray(random.length).some((b) => b !== 0), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
