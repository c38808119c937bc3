/**
 * The mount's pure parts with exact values: a job folder's names, mountinfo and where a
 * revision appears in mounts, sequential-read detection, SEEK_DATA/SEEK_HOLE over an index,
 * and the block cache (sharing, pinning, eviction, buffer reuse, failures not kept).
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { BlockIndex } from "../../src/repo/index_file.ts";
import type { Revision } from "../../src/repo/revision.ts";
import { BlockCache } from "../../src/mount/block_cache.ts";
import { Gate } from "../../src/mount/gate.ts";
import { jobEntries, usableName } from "../../src/mount/names.ts";
import { parseMountinfo, pathsInMounts } from "../../src/mount/mountinfo.ts";
import { Readahead, seekHoleData } from "../../src/mount/reader.ts";
import { SEEK_DATA, SEEK_HOLE } from "../../src/mount/protocol.ts";

function rev(id: string, t: number, tags: string[], complete = true): Revision {
  return {
    id,
    timestampUs: t * 1e6,
    parent: null,
    stats: complete ? { bytes_written: 0, duration: 1 } : { bytes_written: 0 },
    tags,
    backend: "chunked",
    trust: "trusted",
    extra: {},
  };
}

Deno.test("jobEntries: IDs of complete revisions, last, newest per tag; IDs win, unusable left out", () => {
  const history = [
    rev("A1", 1, ["daily", "weekly"]),
    rev("B2", 2, ["daily", "x/y"]),
    rev("C3", 3, ["daily", "last"], false), // incomplete: neither a file nor a tag target
    rev("D4", 4, ["weekly", "A1"]),
  ];
  const names = jobEntries(history, () => true);
  assertEquals([...names.keys()], ["A1", "B2", "D4", "last", "daily", "weekly"]);
  assertEquals(names.get("A1")!.kind, "image");
  const target = (n: string) => {
    const e = names.get(n)!;
    return e.kind === "link" ? e.target : undefined;
  };
  assertEquals([target("last"), target("daily"), target("weekly")], ["D4", "B2", "D4"]);
});

Deno.test("jobEntries: a revision that cannot be served has no file, and no name points to it", () => {
  const history = [rev("A1", 1, ["daily"]), rev("L2", 2, ["daily", "weekly"])];
  const names = jobEntries(history, (r) => r.id !== "L2");
  // Not an older revision under `last` or `daily`: the names are left out.
  assertEquals([...names.keys()], ["A1"]);
  assertEquals([...jobEntries([], () => true).keys()], []);
});

Deno.test("usableName", () => {
  assertEquals(
    ["daily", "manual:x", ".", "..", "", "a/b", "a\0b", "é".repeat(127), "é".repeat(128)].map(
      usableName,
    ),
    [true, true, false, false, false, false, false, true, false],
  );
});

const MOUNTINFO = [
  "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
  "42 27 0:39 / /mnt/vm\\0401 ro,nosuid,nodev,noexec,relatime shared:9 - fuse.backy " +
  "/srv/backy/vm\\0401 ro,user_id=0,group_id=0,default_permissions,max_read=1048576",
  "43 27 0:40 / /mnt/all ro,relatime - fuse.backy-base /srv/backy ro,user_id=0,group_id=0",
  "44 27 0:41 / /mnt/other rw - fuse.sshfs host:/srv/backy/vm2 rw",
  "garbage line",
  "",
].join("\n");

Deno.test("parseMountinfo: mount point, type and source, octal escapes undone", () => {
  assertEquals(parseMountinfo(MOUNTINFO), [
    { dev: "8:1", mountpoint: "/", fstype: "ext4", source: "/dev/sda1" },
    { dev: "0:39", mountpoint: "/mnt/vm 1", fstype: "fuse.backy", source: "/srv/backy/vm 1" },
    { dev: "0:40", mountpoint: "/mnt/all", fstype: "fuse.backy-base", source: "/srv/backy" },
    { dev: "0:41", mountpoint: "/mnt/other", fstype: "fuse.sshfs", source: "host:/srv/backy/vm2" },
  ]);
});

Deno.test("pathsInMounts: the job's own mount and its folder in a base directory mount", () => {
  const entries = parseMountinfo(MOUNTINFO);
  assertEquals(pathsInMounts(entries, "/srv/backy/vm 1", "ID1"), [
    "/mnt/vm 1/ID1",
    "/mnt/all/vm 1/ID1",
  ]);
  assertEquals(pathsInMounts(entries, "/srv/backy/vm2", "ID2"), ["/mnt/all/vm2/ID2"]);
  assertEquals(pathsInMounts(entries, "/srv/other/vm3", "ID3"), []);
});

const MiB = 1024 * 1024;
const BS = 4 * MiB;

Deno.test("Readahead: nothing for random reads; the next blocks once reading is sequential", () => {
  const ra = new Readahead(2, BS);
  assertEquals(ra.next(0, MiB, BS, 10), []); // first read: no pattern yet
  assertEquals(ra.next(MiB, MiB, BS, 10), [1, 2]);
  assertEquals(ra.next(3 * MiB, MiB, BS, 10), [1, 2]); // slightly out of order: still sequential
  assertEquals(ra.next(2 * MiB, MiB, BS, 10), [1, 2]);
  assertEquals(ra.next(4 * MiB, MiB, BS, 10), [2, 3]);
  assertEquals(ra.next(30 * MiB, MiB, BS, 10), []); // a jump: random again
  assertEquals(ra.next(31 * MiB, MiB, BS, 10), [8, 9]);
  assertEquals(ra.next(39 * MiB, MiB, BS, 10), []); // the end of the image: nothing beyond
});

Deno.test("seekHoleData: zero blocks and the end of the file are holes", () => {
  const index = BlockIndex.empty(3 * BS + MiB); // blocks: data, zero, data, zero (short)
  index.set(0, new Uint8Array(32).fill(1));
  index.set(2, new Uint8Array(32).fill(2));
  const size = index.size;
  const seek = (off: number, whence: number) => seekHoleData(index, size, off, whence);
  assertEquals(seek(0, SEEK_DATA), 0);
  assertEquals(seek(100, SEEK_DATA), 100);
  assertEquals(seek(0, SEEK_HOLE), BS);
  assertEquals(seek(BS + 5, SEEK_DATA), 2 * BS);
  assertEquals(seek(BS + 5, SEEK_HOLE), BS + 5);
  assertEquals(seek(2 * BS + 1, SEEK_HOLE), 3 * BS);
  assertEquals(seek(3 * BS, SEEK_DATA), -1); // only a hole up to the end: ENXIO
  assertEquals(seek(size, SEEK_HOLE), -1);
  const full = BlockIndex.empty(BS);
  full.set(0, new Uint8Array(32).fill(3));
  assertEquals(seekHoleData(full, BS, 10, SEEK_HOLE), BS); // the implicit hole at EOF
});

function block(fill: number, n = 16): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

Deno.test("BlockCache: one load per key, shared by concurrent users", async () => {
  const cache = new BlockCache(2);
  let loads = 0;
  const load = async () => {
    loads++;
    await new Promise((r) => setTimeout(r, 5));
    return block(7);
  };
  const got = await Promise.all([
    cache.use("a", load, (d) => d[0]),
    cache.use("a", load, (d) => d[1]),
  ]);
  assertEquals(got, [7, 7]);
  assertEquals(loads, 1);
  assertEquals(await cache.use("a", load, (d) => d.length), 16);
  assertEquals(loads, 1);
});

Deno.test("BlockCache: evicts the least recently used idle block and reuses its buffer", async () => {
  const cache = new BlockCache(2, 1);
  const spares: (Uint8Array | undefined)[] = [];
  const loader = (fill: number) => (spare: Uint8Array | undefined) => {
    spares.push(spare);
    const out = spare ?? new Uint8Array(16);
    out.fill(fill);
    return Promise.resolve(out);
  };
  await cache.use("a", loader(1), () => {});
  await cache.use("b", loader(2), () => {});
  await cache.use("a", loader(9), () => {}); // hit: a is now the most recent
  await cache.use("c", loader(3), () => {}); // evicts b
  assertEquals([cache.has("a"), cache.has("b"), cache.has("c")], [true, false, true]);
  assertEquals(cache.size, 2);
  await cache.use("d", loader(4), (d) => assertEquals(d[0], 4));
  // c was loaded into no spare; d reused b's buffer
  assertEquals(spares.map((s) => s === undefined), [true, true, true, false]);
});

Deno.test("BlockCache: a block in use is not evicted nor reused until its user is done", async () => {
  const cache = new BlockCache(1, 4);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const a = block(1);
  const using = cache.use("a", () => Promise.resolve(a), async (d) => {
    await gate; // (a real user copies synchronously; this one holds on to test pinning)
    return d[0];
  });
  await new Promise((r) => setTimeout(r, 1));
  let spareForB: Uint8Array | undefined;
  await cache.use("b", (s) => {
    spareForB = s;
    return Promise.resolve(block(2));
  }, () => {});
  assertEquals(spareForB, undefined, "a's buffer must not be handed out while a is in use");
  release();
  assertEquals(await using, 1);
  assertEquals(a[0], 1);
});

Deno.test("BlockCache: failures are not cached, the next use loads again", async () => {
  const cache = new BlockCache(2);
  let n = 0;
  const load = () => ++n === 1 ? Promise.reject(new Error("damaged")) : Promise.resolve(block(5));
  await rejects(cache.use("k", load, () => {}), /damaged/);
  assert(!cache.has("k"));
  assertEquals(await cache.use("k", load, (d) => d[0]), 5);
  assertEquals(n, 2);
  await cache.prefetch("p", () => Promise.reject(new Error("x"))); // swallowed
  assert(!cache.has("p"));
});

Deno.test("Gate: at most `limit` inside, the rest in arrival order; leaving twice counts once", async () => {
  const gate = new Gate(2);
  const order: string[] = [];
  const a = await gate.enter();
  const b = await gate.enter();
  assertEquals(gate.busy, 2);
  const c = gate.enter().then((leave) => (order.push("c"), leave));
  const d = gate.enter().then((leave) => (order.push("d"), leave));
  await new Promise((r) => setTimeout(r, 5));
  assertEquals(order, []);
  a();
  a(); // no second turn from the same leave
  const leaveC = await c;
  await new Promise((r) => setTimeout(r, 5));
  assertEquals(order, ["c"]);
  assertEquals(gate.busy, 2);
  b();
  const leaveD = await d;
  assertEquals(order, ["c", "d"]);
  leaveC();
  leaveD();
  assertEquals(gate.busy, 0);
});
