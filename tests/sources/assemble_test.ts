// Assembling rbd diff records into block events (sources/ceph/assemble.ts), without a
// cluster: generated record streams, and a generated `rbd diff v2` byte stream parsed by the
// real parser.
import { deepStrictEqual as assertEquals, rejects } from "node:assert/strict";
import { assembleBlocks, BlockBuffers, gaps } from "../../src/sources/ceph/assemble.ts";
import { type DiffRecord, parseDiff } from "../../src/sources/ceph/diff.ts";
import type { SourceEvent } from "../../src/sources/source.ts";
import { randomBytes } from "../helpers.ts";

const B = 4 * 1024 * 1024;

async function* records(list: DiffRecord[]): AsyncGenerator<DiffRecord> {
  for (const r of list) yield r;
}

/** Events with data buffers summarised as [first byte, covered ranges]. */
async function run(
  list: DiffRecord[] | AsyncIterable<DiffRecord>,
  opts: Partial<Parameters<typeof assembleBlocks>[1]> = {},
) {
  const out: unknown[] = [];
  let received = 0;
  const buffers = new BlockBuffers();
  for await (
    const ev of assembleBlocks(Array.isArray(list) ? records(list) : list, {
      mode: "full",
      toSnap: "backy-b",
      buffers,
      received: (n) => received += n,
      ...opts,
    })
  ) out.push(summary(ev));
  return { events: out, received };
}

function summary(ev: SourceEvent): unknown {
  if (ev.kind !== "data") return ev;
  return { kind: "data", block: ev.block, uncovered: ev.uncovered, base: ev.base };
}

const head = (size: number, from?: string): DiffRecord[] => [
  ...(from ? [{ type: "from" as const, name: from }] : []),
  { type: "to", name: "backy-b" },
  { type: "size", size },
];

Deno.test("gaps: the uncovered parts of a block, from overlapping ranges in any order", () => {
  assertEquals(gaps([], 10), [[0, 10]]);
  assertEquals(gaps([[2, 3], [0, 1], [4, 2]], 10), [[1, 1], [6, 4]]);
  assertEquals(gaps([[0, 10]], 10), []);
});

Deno.test("full stream: every block once, untouched ones as all-uncovered zero blocks", async () => {
  const { events, received } = await run([
    ...head(3 * B + 100),
    { type: "data", offset: B + 10, data: new Uint8Array(20) },
    { type: "zero", offset: B + 4096, length: 4096 },
    { type: "end" },
  ]);
  assertEquals(events, [
    { kind: "size", size: 3 * B + 100 },
    { kind: "data", block: 0, uncovered: [[0, B]], base: "zero" },
    { kind: "data", block: 1, uncovered: [[0, 10], [30, 4066], [8192, B - 8192]], base: "zero" },
    { kind: "data", block: 2, uncovered: [[0, B]], base: "zero" },
    { kind: "data", block: 3, uncovered: [[0, 100]], base: "zero" },
  ]);
  assertEquals(received, 20 + 4096);
});

Deno.test("diff stream: untouched blocks are unchanged, grown space zero, resized tail sent", async () => {
  // The parent had 2.5 blocks; the image now has 4: block 2's length changed.
  const parent = { count: 3, blockLength: (i: number) => (i < 2 ? B : B / 2) };
  const { events } = await run([
    ...head(4 * B, "backy-a"),
    { type: "data", offset: 0, data: new Uint8Array(B) },
    { type: "end" },
  ], { mode: "diff", parent, fromSnap: "backy-a" });
  assertEquals(events, [
    { kind: "size", size: 4 * B },
    { kind: "data", block: 0, uncovered: [], base: "parent" },
    { kind: "unchanged", block: 1 },
    { kind: "data", block: 2, uncovered: [[0, B]], base: "parent" },
    { kind: "zero", block: 3 },
  ]);
});

Deno.test("a record spanning blocks is split; the bytes land at their offsets", async () => {
  const data = randomBytes(B + 8192, 5);
  const got: Uint8Array[] = [];
  const buffers = new BlockBuffers();
  for await (
    const ev of assembleBlocks(
      records([...head(3 * B), { type: "data", offset: B - 4096, data }, { type: "end" }]),
      { mode: "full", toSnap: "backy-b", buffers },
    )
  ) {
    if (ev.kind === "data") got.push(ev.data.slice(0, B));
  }
  assertEquals(got.length, 3);
  assertEquals(got[0].subarray(B - 4096), data.subarray(0, 4096));
  assertEquals(got[1], data.subarray(4096, B + 4096));
  assertEquals(got[2].subarray(0, 4096), data.subarray(B + 4096));
});

Deno.test("broken streams are errors: order, sizes, snapshots, end", async () => {
  const cases: [DiffRecord[], RegExp, Record<string, unknown>?][] = [
    [[...head(2 * B), { type: "data", offset: B, data: new Uint8Array(1) }, {
      type: "data",
      offset: 0,
      data: new Uint8Array(1),
    }, { type: "end" }], /not ordered by offset/],
    [[...head(B), { type: "zero", offset: B - 1, length: 2 }, { type: "end" }], /beyond the image/],
    [
      [{ type: "to", name: "backy-b" }, { type: "data", offset: 0, data: new Uint8Array(1) }],
      /before its size/,
    ],
    [[...head(B), { type: "size", size: B }, { type: "end" }], /two size records/],
    [head(B), /without an end record/],
    [[{ type: "to", name: "backy-b" }, { type: "end" }], /no size record/],
    [[{ type: "to", name: "other" }, { type: "end" }], /ends at snapshot 'other'/],
    [[...head(B, "backy-x"), { type: "end" }], /starts at snapshot 'backy-x', expected 'backy-a'/, {
      fromSnap: "backy-a",
    }],
  ];
  for (const [list, error, opts] of cases) await rejects(() => run(list, opts), error);
});

Deno.test("buffers come back for reuse: a long stream never holds more than it is given", async () => {
  const buffers = new BlockBuffers();
  const seen = new Set<ArrayBufferLike>();
  const list: DiffRecord[] = [...head(64 * B)];
  for (let i = 0; i < 64; i++) list.push({ type: "zero", offset: i * B, length: 4096 });
  list.push({ type: "end" });
  for await (
    const ev of assembleBlocks(records(list), { mode: "full", toSnap: "backy-b", buffers })
  ) {
    if (ev.kind !== "data") continue;
    seen.add(ev.data.buffer);
    buffers.give(ev.data); // the consumer is done with it at once
  }
  assertEquals(seen.size, 1, "one buffer, given back and taken again for every block");
});

Deno.test("a generated rbd diff v2 byte stream, parsed and assembled", async () => {
  const enc: number[] = [];
  const u64 = (n: number) => {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
    enc.push(...b);
  };
  const tag = (t: string, len: number) => {
    enc.push(t.charCodeAt(0));
    u64(len);
  };
  enc.push(..."rbd diff v2\n".split("").map((c) => c.charCodeAt(0)));
  const name = "backy-b";
  tag("t", 4 + name.length);
  enc.push(name.length, 0, 0, 0, ...name.split("").map((c) => c.charCodeAt(0)));
  tag("s", 8);
  u64(2 * B);
  const data = randomBytes(5000, 9);
  tag("w", 16 + data.length);
  u64(B + 1);
  u64(data.length);
  enc.push(...data);
  enc.push("e".charCodeAt(0));
  const bytes = Uint8Array.from(enc);
  async function* chunks() {
    for (let at = 0; at < bytes.length; at += 333) yield bytes.slice(at, at + 333);
  }
  const { events, received } = await run(parseDiff(chunks(), { views: true }));
  assertEquals(events, [
    { kind: "size", size: 2 * B },
    { kind: "data", block: 0, uncovered: [[0, B]], base: "zero" },
    { kind: "data", block: 1, uncovered: [[0, 1], [5001, B - 5001]], base: "zero" },
  ]);
  assertEquals(received, 5000);
});
