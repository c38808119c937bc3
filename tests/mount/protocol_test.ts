/** The FUSE wire format (linux/fuse.h): exact bytes of what we decode and encode. */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  decodeInit,
  decodeLseek,
  decodeName,
  decodeOpen,
  decodeRead,
  decodeRequest,
  encodeAttr,
  encodeDirents,
  encodeEntry,
  encodeInit,
  encodeLseek,
  encodeOpen,
  encodeOutHeader,
  encodeStatfs,
  Op,
  S_IFREG,
} from "../../src/mount/protocol.ts";

/** Little-endian fields into bytes: [width, value] pairs. */
function le(...fields: [1 | 2 | 4 | 8, number | bigint][]): Uint8Array {
  const total = fields.reduce((s, [w]) => s + w, 0);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  let at = 0;
  for (const [w, val] of fields) {
    if (w === 1) v.setUint8(at, Number(val));
    if (w === 2) v.setUint16(at, Number(val), true);
    if (w === 4) v.setUint32(at, Number(val), true);
    if (w === 8) v.setBigUint64(at, BigInt(val), true);
    at += w;
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A fuse_in_header for a request with this body. */
function header(opcode: number, unique: bigint, nodeid: number, bodyLength: number): Uint8Array {
  return le(
    [4, 40 + bodyLength],
    [4, opcode],
    [8, unique],
    [8, nodeid],
    [4, 1000],
    [4, 100],
    [4, 4242],
    [2, 0],
    [2, 0],
  );
}

Deno.test("decodeRequest: header fields and the body, even with bytes after the request", () => {
  const body = new TextEncoder().encode("last\0");
  const raw = concat(header(Op.LOOKUP, 0x1122334455n, 7, body.length), body, new Uint8Array(9));
  const r = decodeRequest(raw);
  assertEquals(
    { opcode: r.opcode, unique: r.unique, nodeid: r.nodeid, uid: r.uid, gid: r.gid, pid: r.pid },
    { opcode: 1, unique: 0x1122334455n, nodeid: 7, uid: 1000, gid: 100, pid: 4242 },
  );
  assertEquals([...r.body], [...body]);
  assertEquals(decodeName(r.body), "last");
});

Deno.test("decodeRequest: refuses short input and lengths beyond what was read", () => {
  assertThrows(() => decodeRequest(new Uint8Array(39)), /short FUSE request \(39 bytes\)/);
  const raw = header(Op.GETATTR, 1n, 1, 100); // claims 140 bytes
  assertThrows(() => decodeRequest(raw), /length 140 does not fit 40 bytes/);
});

Deno.test("request bodies: init, read, open, lseek", () => {
  const init = le([4, 7], [4, 45], [4, 131072], [4, 0x73fffffb], [4, 0]);
  assertEquals(decodeInit(init), { major: 7, minor: 45, maxReadahead: 131072, flags: 0x73fffffb });
  const read = le([8, 5], [8, 2 ** 40 + 4096], [4, 131072], [4, 0], [8, 0], [4, 0x8000], [4, 0]);
  assertEquals(decodeRead(read), { fh: 5, offset: 2 ** 40 + 4096, size: 131072 });
  assertEquals(decodeOpen(le([4, 0o100001], [4, 0])), { flags: 0o100001 });
  assertEquals(decodeLseek(le([8, 3], [8, 12345], [4, 4], [4, 0])), {
    fh: 3,
    offset: 12345,
    whence: 4,
  });
});

const attr = {
  ino: 9,
  size: 41943040,
  blocks: 40960,
  timeUs: 1764506838_123456,
  mode: S_IFREG | 0o400,
  nlink: 1,
  uid: 0,
  gid: 34,
};

/** fuse_attr of `attr` as the kernel reads it (88 bytes). */
const attrBytes = le(
  [8, 9],
  [8, 41943040],
  [8, 40960],
  [8, 1764506838],
  [8, 1764506838],
  [8, 1764506838],
  [4, 123456000],
  [4, 123456000],
  [4, 123456000],
  [4, 0o100400],
  [4, 1],
  [4, 0],
  [4, 34],
  [4, 0],
  [4, 4096],
  [4, 0],
);

Deno.test("encodeEntry and encodeAttr: fuse_entry_out (128 bytes) and fuse_attr_out (104)", () => {
  const entry = encodeEntry(9, attr, 60, 1.5);
  assertEquals(entry.length, 128);
  assertEquals(
    [...entry],
    [...concat(le([8, 9], [8, 0], [8, 60], [8, 1], [4, 0], [4, 500_000_000]), attrBytes)],
  );
  const out = encodeAttr(attr, 1);
  assertEquals(out.length, 104);
  assertEquals([...out], [...concat(le([8, 1], [4, 0], [4, 0]), attrBytes)]);
});

Deno.test("encodeOpen, encodeLseek, encodeStatfs, encodeInit", () => {
  assertEquals([...encodeOpen(17, 2)], [...le([8, 17], [4, 2], [4, 0])]);
  assertEquals([...encodeLseek(2 ** 33)], [...le([8, 2 ** 33])]);
  assertEquals(
    [...encodeStatfs(0, 5)],
    [
      ...le([8, 0], [8, 0], [8, 0], [8, 5], [8, 0], [4, 4096], [4, 255], [4, 4096], [4, 0]),
      ...new Uint8Array(24),
    ],
  );
  const init = encodeInit({
    maxReadahead: 131072,
    flags: 0x400001,
    maxBackground: 16,
    congestionThreshold: 12,
    maxWrite: 4096,
    maxPages: 256,
  });
  assertEquals(
    [...init],
    [
      ...le(
        [4, 7],
        [4, 31],
        [4, 131072],
        [4, 0x400001],
        [2, 16],
        [2, 12],
        [4, 4096],
        [4, 1000],
        [2, 256],
        [2, 0],
        [4, 0],
      ),
      ...new Uint8Array(28),
    ],
  );
});

Deno.test("encodeDirents: 8-byte aligned records from an offset, only whole ones that fit", () => {
  const entries = [
    { ino: 1, name: ".", type: 4 },
    { ino: 1, name: "..", type: 4 },
    { ino: 5, name: "9LqhxYRw5FzNk5YCJvNBaW", type: 8 },
    { ino: 6, name: "last", type: 10 },
  ];
  const rec = (ino: number, off: number, name: string, type: number) => {
    const n = new TextEncoder().encode(name);
    const len = (24 + n.length + 7) & ~7;
    const out = new Uint8Array(len);
    out.set(le([8, ino], [8, off], [4, n.length], [4, type]), 0);
    out.set(n, 24);
    return out;
  };
  const all = encodeDirents(entries, 0, 4096);
  assertEquals(
    [...all],
    [...concat(
      rec(1, 1, ".", 4),
      rec(1, 2, "..", 4),
      rec(5, 3, "9LqhxYRw5FzNk5YCJvNBaW", 8),
      rec(6, 4, "last", 10),
    )],
  );
  assertEquals(all.length, 32 + 32 + 48 + 32);
  // From entry 2, with room for the ID's 48-byte record but not the next one.
  assertEquals([...encodeDirents(entries, 2, 60)], [...rec(5, 3, "9LqhxYRw5FzNk5YCJvNBaW", 8)]);
  assertEquals(encodeDirents(entries, 4, 4096).length, 0);
});

Deno.test("encodeOutHeader: length includes the header; errors are negative errno", () => {
  const out = new Uint8Array(16);
  encodeOutHeader(out, 0xabcdefn, 5, 0);
  assertEquals([...out], [...le([4, 16], [4, 0xfffffffb], [8, 0xabcdef])]);
  encodeOutHeader(out, 3n, 0, 4096);
  assertEquals([...out], [...le([4, 4112], [4, 0], [8, 3])]);
});
