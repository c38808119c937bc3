/**
 * The store contract (tests/store/conformance_test.ts) checked against the s3 store on a
 * real gateway, through the real data-path Workers: what restore, verify and mount use
 * (open, read, check, quarantine) and what backups use (begin, write, commit, abort), with
 * the differences s3 has on purpose (abort keeps chunks; the collector runs in steps).
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { join } from "node:path";
import { BLOCK_SIZE, BlockIndex, hex } from "../../src/repo/index_file.ts";
import { JobDir } from "../../src/repo/jobdir.ts";
import { storeFor } from "../../src/store/store.ts";
import { WorkerPool } from "../../src/backup/pool.ts";
import { alignedBuffer } from "../../src/util/native/buffer.ts";
import { bytesEqual, tempDir } from "../helpers.ts";
import { content, expected, readAll, revision, writeRevision } from "../store/store_helpers.ts";
import { gateway, getObject, listKeys, newBucket, putObject, s3Test } from "./rgw.ts";

const gw = await gateway();

s3Test(gw, "store conformance: s3", async (g) => {
  const dir = await tempDir();
  const pool = new WorkerPool(2);
  try {
    const bucket = await newBucket(g, "conf");
    // Keys from a credentials file this time (owner-only, as it must be).
    const creds = join(dir, "s3-credentials");
    await Deno.writeTextFile(
      creds,
      `[default]\naws_access_key_id = ${g.accessKeyId}\naws_secret_access_key = ${g.secretAccessKey}\n`,
      { mode: 0o600 },
    );
    await Deno.writeTextFile(
      join(dir, "config"),
      `type: file\nfilename: x\nbackend: s3\ns3:\n  bucket: ${bucket}\n  endpoint: ${g.endpoint}\n` +
        `  credentials-file: ${creds}\n  job: conf\n  gc-grace: 1\n  gc-interval: 1\n`,
      { mode: 0o600 },
    );
    const job = await JobDir.open(dir);
    const store = storeFor(job);
    assertEquals([store.backend, store.sharedBlocks, store.imageName("x")], [
      "s3",
      true,
      undefined,
    ]);
    const chunkKey = (d: Uint8Array) => `chunks/${hex(d).slice(0, 2)}/${hex(d)}`;

    const A = revision("AAAAAAAAAAAAAAAAAAAAAA", "s3");
    const blocksA = [11, 0, 12, 13];
    const { index: indexA, kinds } = await writeRevision(job, store, pool, A, blocksA);
    assertEquals(kinds, ["written", "zero", "written", "written"]);
    assert(bytesEqual(await readAll(store, pool, A), expected(blocksA)));
    const dataA = await store.open(A);
    for (let i = 0; i < indexA.count; i++) {
      const r = await pool.check({
        offset: i * BLOCK_SIZE,
        length: indexA.blockLength(i),
        store: dataA.ref,
        digest: indexA.isZero(i) ? null : indexA.digest(i).slice(),
      });
      assertEquals(r, { ok: true });
    }
    assertEquals((await listKeys(g, bucket, "chunks/")).length, 3);
    assert(await getObject(g, bucket, `jobs/conf/${A.id}.rev`), ".rev published");

    // On a parent: unchanged blocks are the parent's; a repeat of a known block is not sent.
    const B = revision("BBBBBBBBBBBBBBBBBBBBBB", "s3", A);
    const blocksB = [11, 11, 12, 14];
    const b = await writeRevision(job, store, pool, B, blocksB, { rev: A, index: indexA });
    assertEquals(b.kinds, ["same", "dedup", "same", "written"]);
    assert(bytesEqual(await readAll(store, pool, B), expected(blocksB)));
    assert(bytesEqual(await readAll(store, pool, A), expected(blocksA)), "A unchanged");

    // A partly sent block takes the parent's bytes in its gaps.
    const C = revision("CCCCCCCCCCCCCCCCCCCCCC", "s3", B);
    const wc = await store.begin(C, B, b.index);
    const part = alignedBuffer(BLOCK_SIZE);
    part.fill(0x5a, 4096, 8192);
    const rc = await pool.store({
      offset: 0,
      length: BLOCK_SIZE,
      store: wc.ref,
      content: {
        from: "data",
        data: part,
        uncovered: [[0, 4096], [8192, BLOCK_SIZE - 8192]],
        base: "parent",
      },
      parentDigest: b.index.digest(0).slice(),
      parentLength: BLOCK_SIZE,
    });
    const want = content(11, BLOCK_SIZE);
    want.fill(0x5a, 4096, 8192);
    assertEquals(rc.kind, "written");
    await pool.closeFiles(); // the upload has landed
    const got = await pool.read({
      offset: 0,
      length: BLOCK_SIZE,
      store: wc.ref,
      digest: rc.digest!,
    });
    assert(bytesEqual(got.data!, want));
    await pool.closeFiles();
    await wc.abort();

    // Abort: no index in the bucket, open refuses; chunks stay for the collector.
    const D = revision("DDDDDDDDDDDDDDDDDDDDDD", "s3", B);
    const wd = await store.begin(D, B, undefined);
    const d = alignedBuffer(BLOCK_SIZE);
    d.set(content(99, BLOCK_SIZE));
    const rd = await pool.store({
      offset: 0,
      length: BLOCK_SIZE,
      store: wd.ref,
      content: { from: "data", data: d, uncovered: [], base: "zero" },
      parentDigest: null,
      parentLength: 0,
    });
    await pool.closeFiles();
    await wd.commit(BlockIndex.empty(BLOCK_SIZE));
    await wd.abort();
    assertEquals(await getObject(g, bucket, `jobs/conf/${D.id}.index`), undefined);
    await rejects(() => store.open({ ...D, stats: { bytes_written: 0, duration: 1 } }));
    assert(await getObject(g, bucket, chunkKey(rd.digest!)), "chunk kept");
    await rejects(() => store.open(revision("EEEEEEEEEEEEEEEEEEEEEE", "s3")), /is incomplete/);

    // A damaged chunk: never returned, named, quarantined.
    const dataB = await store.open(B);
    const digest = b.index.digest(3).slice();
    const key = chunkKey(digest);
    const packed = (await getObject(g, bucket, key))!;
    packed.fill(0xee, 100, 108);
    await putObject(g, bucket, key, packed);
    const req = {
      offset: 3 * BLOCK_SIZE,
      length: b.index.blockLength(3),
      store: dataB.ref,
      digest,
    };
    await rejects(() => pool.read(req), (e: Error) => {
      assertEquals(e.name, "DamagedBlockError");
      assert(e.message.includes(`s3://${bucket}/${key}`) && e.message.includes("corrupt"));
      return true;
    });
    assertEquals((await pool.check(req)).ok, false);
    await pool.closeFiles();
    const moved = await store.quarantine([{ digest, length: req.length, offset: req.offset }]);
    assertEquals(moved.length, 1);
    assert(moved[0].startsWith(`s3://${bucket}/quarantine/${hex(digest)}.`), moved[0]);
    assertEquals(await getObject(g, bucket, key), undefined);

    // Removing a revision: bucket and directory; the collector takes what nobody references.
    await store.removeRevision(A.id);
    assertEquals(await getObject(g, bucket, `jobs/conf/${A.id}.rev`), undefined);
    assertEquals(await getObject(g, bucket, `jobs/conf/${A.id}.index`), undefined);
    assertEquals((await job.scan()).revisions.map((r) => r.id), [B.id]);
    await new Promise((r) => setTimeout(r, 2100)); // past the 1 s grace period
    const first = await store.collectGarbage(); // condemns (no other writer: nothing to wait for)
    assertEquals(first.removed, 0);
    const second = await store.collectGarbage();
    // A's block 13, C's partial block and D's block 99: unreferenced; B's stay.
    assertEquals(second.removed, 3);
    const r = await pool.read({
      offset: 0,
      length: BLOCK_SIZE,
      store: (await store.open(B)).ref,
      digest: b.index.digest(0).slice(),
    });
    assert(bytesEqual(r.data!, content(11, BLOCK_SIZE)));
    await pool.closeFiles();
  } finally {
    pool.terminate();
    await Deno.remove(dir, { recursive: true });
  }
});
