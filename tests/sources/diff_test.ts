import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  DEFAULT_MAX_PIECE,
  DiffFormatError,
  diffHeaderVersion,
  type DiffRecord,
  parseDiff,
  pythonBytesRepr,
} from "../../src/sources/ceph/diff.ts";
import { BackyError } from "../../src/util/errors.ts";

// --- Encoder: builds diffs byte by byte following Ceph's doc/dev/rbd-diff.rst. ---

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

class Enc {
  #bytes: number[] = [];
  constructor(readonly version: 1 | 2 = 1) {
    this.raw(ascii(`rbd diff v${version}\n`));
  }
  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.#bytes.push(bytes[i]);
    return this;
  }
  u32(n: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, n, true);
    return this.raw(b);
  }
  u64(n: number | bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
    return this.raw(b);
  }
  /** Tag, then in v2 the record length (`len` overrides the correct one). */
  tag(t: string, payload: number, len?: number): this {
    this.raw(ascii(t));
    return this.version === 2 ? this.u64(len ?? payload) : this;
  }
  name(t: "f" | "t", name: string, len?: number): this {
    return this.tag(t, 4 + name.length, len).u32(name.length).raw(ascii(name));
  }
  size(n: number | bigint, len?: number): this {
    return this.tag("s", 8, len).u64(n);
  }
  w(offset: number, data: Uint8Array, len?: number): this {
    return this.tag("w", 16 + data.length, len).u64(offset).u64(data.length).raw(data);
  }
  z(offset: number, length: number, len?: number): this {
    return this.tag("z", 16, len).u64(offset).u64(length);
  }
  e(): this {
    return this.raw(ascii("e"));
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }
}

// --- Feeding with various chunkings. ---

/** Deterministic PRNG so a failing random chunking can be reproduced. */
function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Chunker = (bytes: Uint8Array) => Uint8Array[];

const chunkings: Record<string, Chunker> = {
  whole: (b) => [b],
  bytewise: (b) => Array.from(b, (_, i) => b.slice(i, i + 1)),
  "random 1..20 with empty chunks": (b) => {
    const rnd = mulberry32(42);
    const out: Uint8Array[] = [];
    for (let i = 0; i < b.length;) {
      const n = Math.floor(rnd() * 21); // 0 = empty chunk, which readers must tolerate
      out.push(b.slice(i, i + n));
      i += n;
    }
    return out;
  },
  "random 1..5000": (b) => {
    const rnd = mulberry32(7);
    const out: Uint8Array[] = [];
    for (let i = 0; i < b.length;) {
      const n = 1 + Math.floor(rnd() * 5000);
      out.push(b.slice(i, i + n));
      i += n;
    }
    return out;
  },
};

async function* fromChunks(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield c;
}

function stream(chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks);
}

async function collect(
  input: AsyncIterable<Uint8Array>,
  maxPiece?: number,
): Promise<DiffRecord[]> {
  const out: DiffRecord[] = [];
  for await (const r of parseDiff(input, { maxPiece })) out.push(r);
  return out;
}

/** Parses `bytes` under every chunking (and as a ReadableStream) and expects `expected`. */
async function expectRecords(bytes: Uint8Array, expected: DiffRecord[], maxPiece?: number) {
  for (const [label, chunker] of Object.entries(chunkings)) {
    assert.deepStrictEqual(await collect(fromChunks(chunker(bytes)), maxPiece), expected, label);
    assert.deepStrictEqual(
      await collect(stream(chunker(bytes)), maxPiece),
      expected,
      `${label} (ReadableStream)`,
    );
  }
}

/** Expects `message` under every chunking. */
async function expectError(bytes: Uint8Array, message: string, maxPiece?: number) {
  for (const [label, chunker] of Object.entries(chunkings)) {
    await assert.rejects(
      collect(fromChunks(chunker(bytes)), maxPiece),
      (e: unknown) => {
        assert.ok(e instanceof DiffFormatError, `${label}: ${e}`);
        assert.ok(e instanceof BackyError);
        assert.equal(e.message, message, label);
        return true;
      },
    );
  }
}

const pattern = (n: number, seed = 1) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed));

const FROM = "backy-ed968696-5ab0-4fe0-af1c-14cadab44661";
const TO = "backy-f0e7292e-4ad8-4f2e-86d6-f40dca2aa802";

// --- Tests. ---

Deno.test("diffHeaderVersion recognises v1 and v2 headers only", () => {
  assert.equal(diffHeaderVersion(ascii("rbd diff v1\n")), 1);
  assert.equal(diffHeaderVersion(ascii("rbd diff v2\n")), 2);
  assert.equal(diffHeaderVersion(ascii("rbd diff v1\nfoo")), 1);
  assert.equal(diffHeaderVersion(ascii("rbd diff v3\n")), null);
  assert.equal(diffHeaderVersion(ascii("rbd duff v1\n")), null);
  assert.equal(diffHeaderVersion(ascii("rbd image v2\n")), null);
  assert.equal(diffHeaderVersion(ascii("rbd diff v1")), null);
  assert.equal(diffHeaderVersion(new Uint8Array(0)), null);
});

Deno.test("pythonBytesRepr matches Python's repr(bytes)", () => {
  assert.equal(pythonBytesRepr(new Uint8Array(0)), "b''");
  assert.equal(pythonBytesRepr(ascii("rbd duff v1\n")), "b'rbd duff v1\\n'");
  assert.equal(
    pythonBytesRepr(Uint8Array.of(0, 9, 13, 0x7f, 0x80, 0xff)),
    "b'\\x00\\t\\r\\x7f\\x80\\xff'",
  );
  assert.equal(pythonBytesRepr(ascii("a\\b")), "b'a\\\\b'");
  // Python picks double quotes when only single quotes occur, else escapes the single ones.
  assert.equal(pythonBytesRepr(ascii("it's")), `b"it's"`);
  assert.equal(pythonBytesRepr(ascii(`it's "x"`)), `b'it\\'s "x"'`);
  assert.equal(pythonBytesRepr(ascii(`"x"`)), `b'"x"'`);
});

Deno.test("nodata sample: exact bytes (md5) and records", async () => {
  const bytes = new Enc().name("f", FROM).name("t", TO).size(805306368).e().bytes();
  assert.equal(bytes.length, 116);
  assert.equal(createHash("md5").update(bytes).digest("hex"), "9628608028457a314072a36f4083aa76");
  await expectRecords(bytes, [
    { type: "from", name: FROM },
    { type: "to", name: TO },
    { type: "size", size: 805306368 },
    { type: "end" },
  ]);
});

Deno.test("zero-only diff without metadata", async () => {
  const bytes = new Enc().z(0, 4096).z(1 << 30, 4 << 20).z(2 ** 40, 0).e().bytes();
  await expectRecords(bytes, [
    { type: "zero", offset: 0, length: 4096 },
    { type: "zero", offset: 1 << 30, length: 4 << 20 },
    { type: "zero", offset: 2 ** 40, length: 0 },
    { type: "end" },
  ]);
});

Deno.test("mixed v1 diff: metadata, data and zero records in order", async () => {
  const a = pattern(1000, 3), b = pattern(1, 5);
  const bytes = new Enc().name("f", "a").name("t", "").size(2 ** 40 + 1)
    .w(4096, a).z(8192, 512).w(2 ** 40, b).w(77, new Uint8Array(0)).e().bytes();
  await expectRecords(bytes, [
    { type: "from", name: "a" },
    { type: "to", name: "" },
    { type: "size", size: 2 ** 40 + 1 },
    { type: "data", offset: 4096, data: a },
    { type: "zero", offset: 8192, length: 512 },
    { type: "data", offset: 2 ** 40, data: b },
    // The empty `w` at 77 has no data, hence no piece.
    { type: "end" },
  ]);
});

Deno.test("w records split into maxPiece pieces with absolute offsets", async () => {
  const data = pattern(10_000, 9);
  const bytes = new Enc().w(1_000_000, data).w(5, pattern(3)).e().bytes();
  const expected: DiffRecord[] = [];
  for (let i = 0; i < data.length; i += 4096) {
    expected.push({ type: "data", offset: 1_000_000 + i, data: data.subarray(i, i + 4096) });
  }
  expected.push({ type: "data", offset: 5, data: pattern(3) }, { type: "end" });
  assert.equal(expected.length, 5); // 4096 + 4096 + 1808, then 3
  await expectRecords(bytes, expected, 4096);
  // maxPiece 1: every byte its own piece, whatever the chunking.
  const tiny = new Enc().w(10, Uint8Array.of(1, 2, 3)).e().bytes();
  await expectRecords(tiny, [
    { type: "data", offset: 10, data: Uint8Array.of(1) },
    { type: "data", offset: 11, data: Uint8Array.of(2) },
    { type: "data", offset: 12, data: Uint8Array.of(3) },
    { type: "end" },
  ], 1);
});

Deno.test("a piece inside one input chunk is a view, not a copy", async () => {
  const input = new Enc().w(0, pattern(100)).e().bytes();
  const records = await collect(fromChunks([input]));
  const piece = records[0];
  assert.equal(piece.type, "data");
  if (piece.type !== "data") return;
  assert.equal(piece.data.buffer, input.buffer);
  assert.equal(piece.data.byteOffset, 1 + 12 + 16);
});

Deno.test("1 GiB w record comes out as 256 pieces of 4 MiB", async () => {
  const GiB = 1024 ** 3, offset = 3 * GiB;
  const head = new Enc().size(8 * GiB).raw(ascii("w")).u64(offset).u64(GiB).bytes();
  // The source reuses one 1 MiB-ish chunk (odd size so pieces straddle chunks).
  const block = pattern(1_000_003);
  async function* source(): AsyncGenerator<Uint8Array> {
    yield head;
    for (let left = GiB; left > 0; left -= block.length) {
      yield left >= block.length ? block : block.subarray(0, left);
    }
    yield ascii("e");
  }
  let pieces = 0, next = offset, checked = 0;
  let last: DiffRecord | undefined;
  for await (const r of parseDiff(source())) {
    last = r;
    if (r.type !== "data") continue;
    assert.equal(r.offset, next);
    assert.equal(r.data.length, DEFAULT_MAX_PIECE);
    // Spot-check content: byte at image offset o is pattern[(o - offset) % block.length].
    const i = (r.offset - offset) % block.length;
    assert.equal(r.data[0], block[i]);
    assert.equal(r.data[r.data.length - 1], block[(i + r.data.length - 1) % block.length]);
    checked++;
    next += r.data.length;
    pieces++;
  }
  assert.equal(pieces, 256);
  assert.equal(checked, 256);
  assert.equal(next, offset + GiB);
  assert.deepStrictEqual(last, { type: "end" });
});

Deno.test("anything after e is ignored and the input is released", async () => {
  const bytes = new Enc().z(0, 1).e().raw(ascii("garbage that is not a record")).bytes();
  await expectRecords(bytes, [{ type: "zero", offset: 0, length: 1 }, { type: "end" }]);
  // The source is not read past `e` and gets closed (a ReadableStream would be cancelled).
  let pulledAfterEnd = false, closed = false;
  async function* source(): AsyncGenerator<Uint8Array> {
    try {
      yield new Enc().e().bytes();
      pulledAfterEnd = true;
      yield ascii("x");
    } finally {
      closed = true;
    }
  }
  assert.deepStrictEqual(await collect(source()), [{ type: "end" }]);
  assert.equal(pulledAfterEnd, false);
  assert.equal(closed, true);
});

Deno.test("input is released when the consumer stops early", async () => {
  let closed = false;
  async function* source(): AsyncGenerator<Uint8Array> {
    try {
      yield new Enc().z(0, 1).bytes();
      yield new Enc().z(1, 1).bytes().subarray(12);
      yield ascii("e");
    } finally {
      closed = true;
    }
  }
  for await (const r of parseDiff(source())) {
    assert.equal(r.type, "zero");
    break;
  }
  assert.equal(closed, true);
});

Deno.test("errors of the input itself pass through unchanged", async () => {
  const boom = new Error("pipe broke");
  async function* source(): AsyncGenerator<Uint8Array> {
    yield new Enc().bytes();
    throw boom;
  }
  await assert.rejects(collect(source()), (e) => e === boom);
});

Deno.test("maxPiece must be a positive integer", async () => {
  for (const maxPiece of [0, -1, 1.5, NaN]) {
    await assert.rejects(collect(fromChunks([new Enc().e().bytes()]), maxPiece), RangeError);
  }
});

Deno.test("bad headers", async () => {
  await expectError(ascii("rbd duff v1\nfoo"), "Unexpected header: b'rbd duff v1\\n'");
  await expectError(new Uint8Array(0), "Unexpected header: b''");
  await expectError(ascii("rbd diff"), "Unexpected header: b'rbd diff'");
  await expectError(ascii("rbd diff v3\n"), "Unexpected header: b'rbd diff v3\\n'");
  await expectError(
    Uint8Array.of(0, 1, 0x27, 0x5c, 0xff, 9, 10, 13, 65, 66, 67, 68, 69),
    'Unexpected header: b"\\x00\\x01\'\\\\\\xff\\t\\n\\rABCD"',
  );
});

Deno.test("invalid record types and EOF where a tag is expected", async () => {
  await expectError(
    new Enc().raw(ascii("x")).bytes(),
    'Got invalid record type "x". Previous record: None',
  );
  await expectError(new Enc().bytes(), 'Got invalid record type "". Previous record: None');
  await expectError(
    new Enc().name("f", FROM).name("t", TO).size(805306368).bytes(),
    'Got invalid record type "". Previous record: s',
  );
  await expectError(
    new Enc().name("f", "a").w(0, pattern(3)).raw(ascii("W")).bytes(),
    'Got invalid record type "W". Previous record: w',
  );
  await expectError(
    new Enc().z(0, 1).raw([0]).bytes(),
    'Got invalid record type "\\x00". Previous record: z',
  );
});

Deno.test("metadata after data is an error", async () => {
  await expectError(
    new Enc().name("f", "a").z(0, 1).size(10).e().bytes(),
    'Metadata record "s" after data records. Previous record: z',
  );
  await expectError(
    new Enc().w(0, pattern(2)).name("t", "b").e().bytes(),
    'Metadata record "t" after data records. Previous record: w',
  );
  await expectError(
    new Enc(2).w(0, pattern(2)).name("f", "b").e().bytes(),
    'Metadata record "f" after data records. Previous record: w',
  );
});

Deno.test("truncation inside a record names the record and the byte", async () => {
  const full = new Enc().name("f", "snap").size(100).w(8, pattern(10)).z(20, 5).e().bytes();
  // Layout: header 0-11, f 12 (len 13-16, name 17-20), s 21 (22-29),
  // w 30 (offset 31-38, length 39-46, data 47-56), z 57 (58-73), e 74.
  assert.equal(full.length, 75);
  const cases: [number, string][] = [
    [13, '"f" record at byte 13'],
    [15, '"f" record at byte 15'],
    [19, '"f" record at byte 19'],
    [25, '"s" record at byte 25'],
    [31, '"w" record at byte 31'],
    [42, '"w" record at byte 42'],
    [47, '"w" record at byte 47'],
    [56, '"w" record at byte 56'],
    [70, '"z" record at byte 70'],
  ];
  for (const [cut, where] of cases) {
    await expectError(full.subarray(0, cut), `Unexpected end of diff stream in ${where}`);
  }
  // Cutting right before a tag is an invalid (empty) record type instead.
  await expectError(full.subarray(0, 57), 'Got invalid record type "". Previous record: w');
  // Truncation inside a big w is noticed in a piece, also with several pieces.
  await expectError(
    new Enc().w(0, pattern(100)).bytes().subarray(0, 12 + 17 + 50),
    'Unexpected end of diff stream in "w" record at byte 79',
    16,
  );
});

Deno.test("invalid field values", async () => {
  await expectError(
    new Enc().raw(ascii("f")).u32(-1).e().bytes(),
    'Invalid snapshot name length -1 in "f" record at byte 13',
  );
  await expectError(
    new Enc().raw(ascii("t")).u32(2 ** 30).e().bytes(),
    'Invalid snapshot name length 1073741824 in "t" record at byte 13',
  );
  await expectError(
    new Enc().raw(ascii("f")).u32(2).raw([0xc3, 0x28]).e().bytes(),
    'Snapshot name in "f" record is not valid UTF-8',
  );
  await expectError(
    new Enc().size(2n ** 53n).e().bytes(),
    'Size in "s" record at byte 13 exceeds 2^53: 9007199254740992',
  );
  await expectError(
    new Enc().z(0, 1).raw(ascii("z")).u64(1).u64(2n ** 64n - 1n).e().bytes(),
    'Length in "z" record at byte 38 exceeds 2^53: 18446744073709551615',
  );
  await expectError(
    new Enc().z(2 ** 52, 2 ** 52).e().bytes(),
    `Range ${2 ** 52}+${2 ** 52} in "z" record exceeds 2^53`,
  );
  // Largest representable values are fine.
  await expectRecords(new Enc().size(2 ** 53 - 1).z(2 ** 53 - 2, 1).e().bytes(), [
    { type: "size", size: 2 ** 53 - 1 },
    { type: "zero", offset: 2 ** 53 - 2, length: 1 },
    { type: "end" },
  ]);
});

// --- v2 ---

Deno.test("v2: nodata sample carries record lengths", async () => {
  const bytes = new Enc(2).name("f", FROM).name("t", TO).size(805306368).e().bytes();
  assert.equal(bytes.length, 116 + 3 * 8);
  // f: tag, le64 46 (= 4 + 42), le32 42, name.
  assert.deepStrictEqual([...bytes.subarray(12, 25)], [102, 46, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0]);
  await expectRecords(bytes, [
    { type: "from", name: FROM },
    { type: "to", name: TO },
    { type: "size", size: 805306368 },
    { type: "end" },
  ]);
});

Deno.test("v2: all record types, pieces and chunkings", async () => {
  const a = pattern(3000, 4);
  const bytes = new Enc(2).name("f", "x").size(1 << 20).w(512, a).z(0, 512).z(4096, 8)
    .w(9, new Uint8Array(0)).e().bytes();
  await expectRecords(bytes, [
    { type: "from", name: "x" },
    { type: "size", size: 1 << 20 },
    { type: "data", offset: 512, data: a.subarray(0, 1024) },
    { type: "data", offset: 1536, data: a.subarray(1024, 2048) },
    { type: "data", offset: 2560, data: a.subarray(2048) },
    { type: "zero", offset: 0, length: 512 },
    { type: "zero", offset: 4096, length: 8 },
    { type: "end" },
  ], 1024);
});

Deno.test("v2: unknown records are skipped by their length (Ceph: readers may skip)", async () => {
  const bytes = new Enc(2).raw(ascii("p")).u64(1).raw([1]) // e.g. snapshot protection status
    .name("t", "b")
    .raw(ascii("Q")).u64(0)
    .w(0, Uint8Array.of(7))
    .raw(ascii("?")).u64(5000).raw(pattern(5000))
    .z(1, 1).e().bytes();
  await expectRecords(bytes, [
    { type: "to", name: "b" },
    { type: "data", offset: 0, data: Uint8Array.of(7) },
    { type: "zero", offset: 1, length: 1 },
    { type: "end" },
  ]);
  // The skipped record counts as the previous one.
  await expectError(
    new Enc(2).raw(ascii("p")).u64(1).raw([1]).bytes(),
    'Got invalid record type "". Previous record: p',
  );
  await expectError(
    new Enc(2).raw(ascii("p")).u64(10).raw([1]).bytes(),
    'Unexpected end of diff stream in "p" record at byte 22',
  );
  await expectError(
    new Enc(2).raw(ascii("p")).u64(2n ** 60n).bytes(),
    'Record length in "p" record at byte 13 exceeds 2^53: 1152921504606846976',
  );
  // v1 has no lengths, so the same tag is fatal there.
  await expectError(
    new Enc(1).raw(ascii("p")).raw([1]).e().bytes(),
    'Got invalid record type "p". Previous record: None',
  );
});

Deno.test("v2: record lengths are validated", async () => {
  await expectError(
    new Enc(2).name("f", "abc", 8).e().bytes(),
    'Invalid length 8 of "f" record (expected 7)',
  );
  await expectError(
    new Enc(2).name("t", "abc", 3).e().bytes(),
    'Invalid length 3 of "t" record (expected 7)',
  );
  await expectError(
    new Enc(2).size(5, 16).e().bytes(),
    'Invalid length 16 of "s" record (expected 8)',
  );
  await expectError(
    new Enc(2).w(0, pattern(10), 10).e().bytes(),
    'Invalid length 10 of "w" record (expected 26)',
  );
  await expectError(
    new Enc(2).z(0, 10, 0).e().bytes(),
    'Invalid length 0 of "z" record (expected 16)',
  );
  await expectError(
    new Enc(2).raw(ascii("w")).u64(16).bytes(),
    'Unexpected end of diff stream in "w" record at byte 21',
  );
  await expectError(new Enc(2).bytes(), 'Got invalid record type "". Previous record: None');
});

Deno.test("views: pieces are views of the input chunks, never copies, and add up", async () => {
  const data = pattern(10_000, 3);
  const input = new Enc().size(20_000).w(100, data).z(12_000, 50).e().bytes();
  for (const size of [1, 7, 4096, input.length]) {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < input.length; i += size) chunks.push(input.slice(i, i + size));
    const got: Uint8Array[] = [];
    let next = 100;
    for await (const r of parseDiff(fromChunks(chunks), { views: true, maxPiece: 4096 })) {
      if (r.type !== "data") continue;
      assert.equal(r.offset, next, `chunk size ${size}: pieces are consecutive`);
      assert.ok(r.data.length <= 4096 && r.data.length > 0);
      assert.ok(chunks.some((c) => c.buffer === r.data.buffer), "a view of an input chunk");
      got.push(r.data);
      next += r.data.length;
    }
    const joined = new Uint8Array(got.reduce((n, d) => n + d.length, 0));
    let at = 0;
    for (const d of got) joined.set(d, (at += d.length) - d.length);
    assert.deepEqual(joined, data, `chunk size ${size}`);
  }
  await assert.rejects(async () => {
    for await (const _ of parseDiff(fromChunks([input.subarray(0, 60)]), { views: true })) {
      // drain
    }
  }, /Unexpected end of diff stream in "w" record/);
});
