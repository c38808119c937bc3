/**
 * `backy expire` on a job directory through the real command (design D10): real backups,
 * timestamps rewritten into the past, then retention, chunk garbage collection and restores
 * of everything that is left.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import YAML from "yaml";
import { backy, filesEqual, randomBytes, tempDir } from "../helpers.ts";
import { formatRevTime, readRevs } from "./harness.ts";

const MiB = 1024 * 1024;
const BLOCK = 4 * MiB;
const DAY = 86400;

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stdout}\n${r.stderr}`);
}

/** The job config as the scheduler writes it (intervals in seconds). */
async function writeJobConfig(
  job: string,
  source: string,
  backend: "cow" | "chunked",
  schedule?: Record<string, { interval: number; keep: number }>,
) {
  const cfg: Record<string, unknown> = { type: "file", filename: source, backend };
  if (schedule) cfg.schedule = schedule;
  await Deno.writeTextFile(join(job, "config"), YAML.stringify(cfg));
}

/** Overwrites one 4 MiB block of the image (the last one may be short) with fresh data. */
async function patchBlock(path: string, block: number, seed: number) {
  const size = (await Deno.stat(path)).size;
  const len = Math.min(BLOCK, size - block * BLOCK);
  const f = await Deno.open(path, { write: true });
  try {
    await f.seek(block * BLOCK, Deno.SeekMode.Start);
    await f.write(randomBytes(len, seed));
  } finally {
    f.close();
  }
}

/** Moves a revision into the past by rewriting `timestamp` in its (read-only) `.rev`. */
async function setTimestamp(job: string, id: string, seconds: number) {
  const file = join(job, `${id}.rev`);
  const mode = (await Deno.stat(file)).mode! & 0o777;
  const rev = YAML.parse(await Deno.readTextFile(file));
  rev.timestamp = formatRevTime(seconds);
  delete rev.checksum; // an edited file of this version: written back as 3.0 wrote them
  await Deno.chmod(file, 0o640);
  await Deno.writeTextFile(file, YAML.stringify(rev));
  await Deno.chmod(file, mode);
}

/** Digests (hex) of the non-zero blocks in an index file, read by its documented layout. */
async function indexDigests(file: string): Promise<Set<string>> {
  const bytes = await Deno.readFile(file);
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 8)), "BACKYIDX");
  const out = new Set<string>();
  for (let off = 48; off + 32 <= bytes.length - 32; off += 32) {
    const d = bytes.subarray(off, off + 32);
    if (d.every((b) => b === 0)) continue;
    out.add([...d].map((b) => b.toString(16).padStart(2, "0")).join(""));
  }
  return out;
}

async function chunkFiles(job: string): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const d of Deno.readDir(join(job, "chunks"))) {
    if (!d.isDirectory) continue;
    for await (const f of Deno.readDir(join(job, "chunks", d.name))) {
      assert.ok(f.name.startsWith(d.name), `${f.name} in ${d.name}`);
      out.add(f.name);
    }
  }
  return out;
}

interface Planned {
  name: string;
  ageDays: number;
  tags: string[];
}

/**
 * Makes one real backup per entry (oldest first), each after changing one block of the
 * source, keeps a copy of what the source held, then dates the revisions back.
 */
async function makeHistory(dir: string, job: string, source: string, plan: Planned[]) {
  const ids = new Map<string, string>();
  const copies = new Map<string, string>();
  const now = Date.now() / 1000;
  const blocks = Math.ceil((await Deno.stat(source)).size / BLOCK);
  for (const [i, p] of plan.entries()) {
    await patchBlock(source, i % blocks, 100 + i);
    // --force: some tags are outside the schedule on purpose (expiry must drop them).
    const r = await backy(["-b", job, "backup", "--force", p.tags.join(",")]);
    ok(r, `backup ${p.name}`);
    const revs = await readRevs(job);
    const id = revs.find((r) => ![...ids.values()].includes(r.id))!.id;
    ids.set(p.name, id);
    const copy = join(dir, `${p.name}.expected`);
    await Deno.copyFile(source, copy);
    copies.set(p.name, copy);
  }
  for (const p of plan) await setTimestamp(job, ids.get(p.name)!, now - p.ageDays * DAY);
  return { ids, copies };
}

Deno.test("backy expire: D10 on crafted ages, chunk GC, every remaining revision restores", async () => {
  const dir = await tempDir("backy-expire-");
  try {
    const job = join(dir, "job");
    const source = join(dir, "source.img");
    await Deno.writeFile(source, randomBytes(10 * MiB, 1)); // blocks of 4, 4 and 2 MiB
    ok(await backy(["-b", job, "init", "--backend", "chunked", "file", source]), "init");
    const schedule = {
      daily: { interval: DAY, keep: 2 },
      weekly: { interval: 7 * DAY, keep: 1 },
    };
    await writeJobConfig(job, source, "chunked", schedule);
    const plan: Planned[] = [
      { name: "manual", ageDays: 40, tags: ["manual:before-upgrade"] },
      { name: "legacy", ageDays: 35, tags: ["hourly"] }, // a tag of a former schedule
      { name: "d30", ageDays: 30, tags: ["daily", "weekly"] },
      { name: "d25", ageDays: 25, tags: ["daily", "hourly"] },
      { name: "d20", ageDays: 20, tags: ["daily"] },
      { name: "d10", ageDays: 10, tags: ["daily", "weekly"] },
      { name: "d3", ageDays: 3, tags: ["daily"] },
      { name: "d1.8", ageDays: 1.8, tags: ["daily"] }, // 3rd newest but within 2 x 1 d
      { name: "d1.2", ageDays: 1.2, tags: ["daily"] },
      { name: "d0.5", ageDays: 0.5, tags: ["daily"] },
    ];
    const { ids, copies } = await makeHistory(dir, job, source, plan);
    const name = new Map([...ids].map(([n, id]) => [id, n]));

    const refs = new Map<string, Set<string>>();
    for (const [n, id] of ids) refs.set(n, await indexDigests(join(job, `${id}.index`)));
    const before = await chunkFiles(job);
    assert.deepEqual(before, new Set([...refs.values()].flatMap((s) => [...s])));

    const r = await backy(["-b", job, "expire"]);
    ok(r, "expire");

    // D10: daily keeps the newest 2 plus anything younger than 2 days; weekly the newest one;
    // manual: tags stay; tags no schedule defines (hourly) go; revisions without tags go.
    const expected = new Map([
      ["manual", ["manual:before-upgrade"]],
      ["d10", ["weekly"]],
      ["d1.8", ["daily"]],
      ["d1.2", ["daily"]],
      ["d0.5", ["daily"]],
    ]);
    const after = await readRevs(job);
    assert.deepEqual(
      new Map(after.map((r) => [name.get(r.id)!, r.tags])),
      expected,
    );
    assert.ok(after.every((r) => r.complete));
    // The rewritten revision stays read-only.
    assert.equal((await Deno.stat(join(job, `${ids.get("d10")}.rev`))).mode! & 0o777, 0o440);

    // Removed revisions leave no files behind; `last.rev` still names the newest.
    for (const [n, id] of ids) {
      const kept = expected.has(n);
      for (const suffix of [".rev", ".index"]) {
        const present = await Deno.stat(join(job, id + suffix)).then(() => true, () => false);
        assert.equal(present, kept, `${n} ${id}${suffix}`);
      }
    }
    assert.equal(await Deno.readLink(join(job, "last.rev")), `${ids.get("d0.5")}.rev`);

    // Chunk GC: exactly the chunks of the remaining revisions are left.
    const still = new Set([...expected.keys()].flatMap((n) => [...refs.get(n)!]));
    const gone = new Set([...before].filter((c) => !still.has(c)));
    assert.deepEqual(await chunkFiles(job), still);
    assert.ok(gone.size > 0, "some chunks were only referenced by removed revisions");
    const sharedWithRemoved = [...refs.get("d3")!].filter((c) => still.has(c));
    assert.ok(sharedWithRemoved.length > 0, "a removed revision shared chunks that stayed");

    for (const n of expected.keys()) {
      const out = join(dir, `${n}.restored`);
      ok(await backy(["-b", job, "restore", "-r", ids.get(n)!, out]), `restore ${n}`);
      assert.ok(await filesEqual(out, copies.get(n)!), `${n} restores identically`);
    }

    // A second run changes nothing.
    ok(await backy(["-b", job, "expire"]), "second expire");
    assert.equal((await readRevs(job)).length, expected.size);
    assert.deepEqual(await chunkFiles(job), still);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backy expire: cow job drops the images of expired revisions", async () => {
  const dir = await tempDir("backy-expire-cow-");
  try {
    const job = join(dir, "job");
    const source = join(dir, "source.img");
    await Deno.writeFile(source, randomBytes(6 * MiB, 2));
    ok(await backy(["-b", job, "init", "--backend", "cow", "file", source]), "init");
    await writeJobConfig(job, source, "cow", { daily: { interval: DAY, keep: 1 } });
    const { ids, copies } = await makeHistory(dir, job, source, [
      { name: "old", ageDays: 3, tags: ["daily"] },
      { name: "older", ageDays: 2, tags: ["daily"] },
      { name: "new", ageDays: 0.2, tags: ["daily"] },
    ]);
    ok(await backy(["-b", job, "expire"]), "expire");
    const left = (await readRevs(job)).map((r) => r.id);
    assert.deepEqual(left, [ids.get("new")]);
    for (const n of ["old", "older"]) {
      for (const suffix of ["", ".rev", ".index"]) {
        const p = join(job, ids.get(n)! + suffix);
        assert.ok(!(await Deno.stat(p).then(() => true, () => false)), `${p} removed`);
      }
    }
    const found = await backy(["-b", job, "find"]);
    assert.equal(found.stdout.trim(), join(await Deno.realPath(job), ids.get("new")!));
    assert.ok(await filesEqual(found.stdout.trim(), copies.get("new")!));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("backy expire refuses a job config without a schedule and touches nothing", async () => {
  const dir = await tempDir("backy-expire-nosched-");
  try {
    const job = join(dir, "job");
    const source = join(dir, "source.img");
    await Deno.writeFile(source, randomBytes(1 * MiB, 3));
    ok(await backy(["-b", job, "init", "--backend", "chunked", "file", source]), "init");
    ok(await backy(["-b", job, "backup", "daily"]), "backup");
    const revs = await readRevs(job);
    await setTimestamp(job, revs[0].id, Date.now() / 1000 - 400 * DAY);
    const r = await backy(["-b", job, "expire"]);
    assert.equal(r.code, 1);
    const real = await Deno.realPath(job);
    assert.equal(
      r.stderr,
      `Error: ${real}/config has no schedule: the scheduler writes it before each run; ` +
        `nothing to expire\n`,
    );
    assert.deepEqual((await readRevs(job)).map((r) => r.id), [revs[0].id]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
