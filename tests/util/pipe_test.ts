// Big pipes to and from real child processes (util/pipe.ts).
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { createHash } from "node:crypto";
import { closeFd, openPipe, pipeChunks, spawnPiped, writeAll } from "../../src/util/pipe.ts";
import { alignedBuffer } from "../../src/util/native/buffer.ts";
import { randomBytes } from "../helpers.ts";

const MiB = 1024 * 1024;

Deno.test("pipeChunks: a child's whole output, in full buffers but the last", async () => {
  const data = randomBytes(9 * MiB + 12345, 21);
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeFile(file, data);
    const pipe = openPipe();
    const child = spawnPiped("cat", [file], { stdout: pipe.writeFd });
    const sizes: number[] = [];
    const got = new Uint8Array(data.length);
    let at = 0;
    for await (const chunk of pipeChunks(pipe.readFd)) {
      sizes.push(chunk.length);
      got.set(chunk, at); // chunks are reused buffers: copy
      at += chunk.length;
    }
    assertEquals(await child.status, 0);
    assertEquals(sizes, [4 * MiB, 4 * MiB, MiB + 12345]);
    assertEquals(at, data.length);
    assert(got.every((b, i) => b === data[i]), "same bytes");
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("writeAll into a child's stdin: every byte arrives, from any kind of buffer", async () => {
  const data = randomBytes(6 * MiB + 7, 22);
  const out = await Deno.makeTempFile();
  try {
    const pipe = openPipe();
    const child = spawnPiped("dd", [`of=${out}`, "bs=1M", "status=none"], {
      stdin: pipe.readFd,
    });
    const buf = alignedBuffer(data.length);
    buf.set(data);
    await writeAll(pipe.writeFd, buf.subarray(0, 3 * MiB));
    // Resizable memory cannot go to the thread pool: copied through, in pieces.
    const n = data.length - 3 * MiB;
    const resizable = new Uint8Array(new ArrayBuffer(n, { maxByteLength: n }));
    resizable.set(data.subarray(3 * MiB));
    await writeAll(pipe.writeFd, resizable);
    closeFd(pipe.writeFd);
    assertEquals(await child.status, 0);
    const written = await Deno.readFile(out);
    assertEquals(
      createHash("sha256").update(written).digest("hex"),
      createHash("sha256").update(data).digest("hex"),
    );
  } finally {
    await Deno.remove(out);
  }
});

Deno.test("writeAll fails (no hang, no signal) once the reader is gone", async () => {
  const pipe = openPipe();
  const child = spawnPiped("head", ["-c", "10"], { stdin: pipe.readFd, stdout: undefined });
  const buf = alignedBuffer(4 * MiB);
  await rejects(async () => {
    for (let i = 0; i < 8; i++) await writeAll(pipe.writeFd, buf);
  }, /writing to a pipe/);
  closeFd(pipe.writeFd);
  assertEquals(await child.status, 0);
});

Deno.test("a missing program: status rejects with NotFound", async () => {
  const pipe = openPipe();
  const child = spawnPiped("/nonexistent/prog", [], { stdout: pipe.writeFd });
  await rejects(child.status, Deno.errors.NotFound);
  const chunks = [];
  for await (const c of pipeChunks(pipe.readFd)) chunks.push(c);
  assertEquals(chunks, []); // its end of the pipe was closed: plain end of file
});

Deno.test("abandoning the output of a stuck writer returns at once", async () => {
  const pipe = openPipe();
  // Writes one byte, then keeps the pipe open without writing.
  const child = spawnPiped("sh", ["-c", "printf x; exec sleep 30"], { stdout: pipe.writeFd });
  const started = Date.now();
  for await (const c of pipeChunks(pipe.readFd, 1, 2)) {
    assertEquals(c, new Uint8Array([0x78]));
    break; // the read-ahead now waits for a byte that never comes
  }
  assert(Date.now() - started < 5000, "returned without waiting for the writer");
  child.kill();
  assertEquals(await child.status, 128 + 15);
  assertEquals(await child.stderr, "");
});
