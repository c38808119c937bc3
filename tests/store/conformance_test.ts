/**
 * One conformance suite for every Store (design D17; restic's backend test suite is the
 * model): the same contract checked against chunked (any filesystem), cow on XFS with
 * reflink (root), and cow as a sparse copy where reflink is missing. Blocks go through the
 * real data-path Workers, onto real files.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { join } from "node:path";
import { BLOCK_SIZE, type BlockIndex } from "../../src/repo/index_file.ts";
import { JobDir } from "../../src/repo/jobdir.ts";
import type { Backend } from "../../src/repo/revision.ts";
import { storeFor } from "../../src/store/store.ts";
import { WorkerPool } from "../../src/backup/pool.ts";
import { alignedBuffer } from "../../src/util/native/buffer.ts";
import {
  assertIncludes,
  bytesEqual,
  corrupt,
  fileExists,
  tempDir,
  xfsMount,
  xfsUnavailable,
} from "../helpers.ts";
import { content, expected, readAll, revision, SIZE, writeRevision } from "./store_helpers.ts";

interface Variant {
  name: string;
  backend: Backend;
  ignore?: string;
  /** A directory on the filesystem to test on, and its cleanup. */
  place(): Promise<{ dir: string; cleanup: () => Promise<void> }>;
}

const tmpPlace = async () => {
  const dir = await tempDir();
  return { dir, cleanup: () => Deno.remove(dir, { recursive: true }) };
};

const xfsMissing = await xfsUnavailable();
const VARIANTS: Variant[] = [
  { name: "chunked", backend: "chunked", place: tmpPlace },
  {
    name: "cow on XFS with reflink",
    backend: "cow",
    ignore: xfsMissing,
    place: async () => {
      const m = await xfsMount(300);
      return { dir: m.dir, cleanup: m.cleanup };
    },
  },
  {
    name: "cow as a sparse copy (no reflink)",
    backend: "cow",
    place: tmpPlace,
  },
];

async function openJob(dir: string, backend: Backend): Promise<JobDir> {
  await Deno.writeTextFile(join(dir, "config"), `type: file\nfilename: x\nbackend: ${backend}\n`);
  return await JobDir.open(dir);
}

for (const v of VARIANTS) {
  Deno.test({
    name: `store conformance: ${v.name}${v.ignore ? ` (ignored: ${v.ignore})` : ""}`,
    ignore: !!v.ignore,
    fn: async (t) => {
      const place = await v.place();
      const pool = new WorkerPool(2);
      try {
        const job = await openJob(place.dir, v.backend);
        const store = storeFor(job, v.backend);
        assertEquals(store.backend, v.backend);
        const A = revision("AAAAAAAAAAAAAAAAAAAAAA", v.backend);
        const blocksA = [11, 0, 12, 13];
        let indexA: BlockIndex;

        await t.step(
          "a first revision: written and zero blocks, read back byte-exact",
          async () => {
            const { index, kinds } = await writeRevision(job, store, pool, A, blocksA);
            indexA = index;
            assertEquals(kinds, ["written", "zero", "written", "written"]);
            assert(bytesEqual(await readAll(store, pool, A), expected(blocksA)));
            const data = await store.open(A);
            assertEquals(data.size, SIZE);
            for (let i = 0; i < index.count; i++) {
              const r = await pool.check({
                offset: i * BLOCK_SIZE,
                length: index.blockLength(i),
                store: data.ref,
                digest: index.isZero(i) ? null : index.digest(i).slice(),
              });
              assertEquals(r, { ok: true });
            }
          },
        );

        await t.step("the image file name: cow has one, chunked none", () => {
          assertEquals(store.imageName(A.id), v.backend === "cow" ? A.id : undefined);
        });

        await t.step("completed data is read-only", async () => {
          if (v.backend === "cow") {
            assertEquals((await Deno.stat(job.imagePath(A.id))).mode! & 0o777, 0o440);
          } else {
            const chunks = [];
            for await (const d of Deno.readDir(job.chunksDir)) {
              for await (const f of Deno.readDir(join(job.chunksDir, d.name))) chunks.push(f);
            }
            assertEquals(chunks.length, 3);
          }
          assertEquals((await Deno.stat(job.indexPath(A.id))).mode! & 0o777, 0o440);
        });

        const B = revision("BBBBBBBBBBBBBBBBBBBBBB", v.backend, A);
        const blocksB = [11, 11, 12, 14];
        await t.step("a revision on a parent: unchanged blocks are the parent's", async () => {
          const { kinds } = await writeRevision(job, store, pool, B, blocksB, {
            rev: A,
            index: indexA,
          });
          // Block 1 repeats block 0's content: chunked deduplicates it, cow writes it.
          assertEquals(kinds, [
            "same",
            v.backend === "chunked" ? "dedup" : "written",
            "same",
            "written",
          ]);
          assert(bytesEqual(await readAll(store, pool, B), expected(blocksB)));
          assert(bytesEqual(await readAll(store, pool, A), expected(blocksA)), "A unchanged");
        });

        await t.step("a partly sent block takes the parent's bytes in its gaps", async () => {
          const C = revision("CCCCCCCCCCCCCCCCCCCCCC", v.backend, B);
          const indexB = (await job.readIndex(B.id))!;
          const writer = await store.begin(C, B, indexB);
          await writer.setSize(SIZE);
          const data = alignedBuffer(BLOCK_SIZE);
          data.fill(0x5a, 4096, 8192); // only [4096, 8192) arrives; the rest is the parent's
          const r = await pool.store({
            offset: 0,
            length: BLOCK_SIZE,
            store: writer.ref,
            content: {
              from: "data",
              data,
              uncovered: [[0, 4096], [8192, BLOCK_SIZE - 8192]],
              base: "parent",
            },
            parentDigest: indexB.digest(0).slice(),
            parentLength: BLOCK_SIZE,
          });
          writer.stored(r.kind, r.digest, r.stored);
          const want = content(11, BLOCK_SIZE);
          want.fill(0x5a, 4096, 8192);
          assertEquals(r.kind, "written");
          const got = await pool.read({
            offset: 0,
            length: BLOCK_SIZE,
            store: writer.ref,
            digest: r.digest!,
          });
          assert(bytesEqual(got.data!, want));
          await pool.closeFiles();
          await writer.abort();
        });

        await t.step("abort frees what the run created, nothing else", async () => {
          const D = revision("DDDDDDDDDDDDDDDDDDDDDD", v.backend, B);
          const writer = await store.begin(D, B, undefined);
          await writer.setSize(SIZE);
          const data = alignedBuffer(BLOCK_SIZE);
          data.set(content(99, BLOCK_SIZE));
          const r = await pool.store({
            offset: 0,
            length: BLOCK_SIZE,
            store: writer.ref,
            content: { from: "data", data, uncovered: [], base: "zero" },
            parentDigest: null,
            parentLength: 0,
          });
          writer.stored(r.kind, r.digest, r.stored);
          await pool.closeFiles();
          await writer.abort();
          assertEquals(await fileExists(job.imagePath(D.id)), false);
          await rejects(() => store.open({ ...D, stats: { bytes_written: 0, duration: 1 } }));
          assert(bytesEqual(await readAll(store, pool, B), expected(blocksB)), "B intact");
        });

        await t.step("an incomplete revision is refused by open", async () => {
          const E = revision("EEEEEEEEEEEEEEEEEEEEEE", v.backend);
          await rejects(() => store.open(E), /is incomplete/);
        });

        await t.step("a damaged block: never returned, named, quarantined", async () => {
          // Block 3 (the short last one) is B's alone.
          const data = await store.open(B);
          const index = data.index!;
          const digest = index.digest(3).slice();
          const file = v.backend === "cow"
            ? job.imagePath(B.id)
            : join(job.chunksDir, hexOf(digest).slice(0, 2), hexOf(digest));
          const at = v.backend === "cow" ? 3 * BLOCK_SIZE + 100 : 100;
          await corrupt(file, at, new Uint8Array(8).fill(0xee));
          const req = {
            offset: 3 * BLOCK_SIZE,
            length: index.blockLength(3),
            store: data.ref,
            digest,
          };
          await rejects(() => pool.read(req), (e: Error) => {
            assertEquals(e.name, "DamagedBlockError");
            assertIncludes(e.message, "corrupt");
            return true;
          });
          const checked = await pool.check(req);
          assertEquals(checked.ok, false);
          await pool.closeFiles();
          const moved = await store.quarantine([{
            digest,
            length: index.blockLength(3),
            offset: 3 * BLOCK_SIZE,
          }]);
          if (v.backend === "chunked") {
            assertEquals(moved, [file]);
            assert(await fileExists(`${file}.corrupt`), "kept as evidence");
          } else assertEquals(moved, []);
        });

        await t.step("removing a revision: metadata and own data go, others stay", async () => {
          await store.removeRevision(A.id);
          assertEquals(await fileExists(job.revPath(A.id)), false);
          assertEquals(await fileExists(job.indexPath(A.id)), false);
          assertEquals(await fileExists(job.imagePath(A.id)), false);
          assertEquals((await job.scan()).revisions.map((r) => r.id), [B.id]);
          const gc = await store.collectGarbage();
          // chunked: A's block 3 (seed 13) is referenced by nobody now; B's chunks stay (its
          // quarantined block 3 as evidence: still referenced, not stored anew yet).
          // cow: A's image went with A; B's stays.
          assertEquals(
            [gc.removed, gc.kept, gc.corruptRemoved],
            v.backend === "chunked" ? [1, 2, 0] : [0, 1, 0],
          );
          // B's undamaged blocks still read back.
          const data = await store.open(B);
          const r = await pool.read({
            offset: 0,
            length: BLOCK_SIZE,
            store: data.ref,
            digest: data.index!.digest(0).slice(),
          });
          assert(bytesEqual(r.data!, content(11, BLOCK_SIZE)));
          await pool.closeFiles();
        });
      } finally {
        pool.terminate();
        await place.cleanup();
      }
    },
  });
}

function hexOf(d: Uint8Array): string {
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}
