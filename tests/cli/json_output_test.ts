/** `status --json` and `plan --json`: what scripts read, with exact values. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { backedUpJob, backy, expectOk, revisions, tempDir } from "../helpers.ts";

Deno.test("status --json: state, trust, verified_at, error per revision", async () => {
  const dir = await tempDir("backy-json-");
  try {
    const { job } = await backedUpJob(dir, [1, 0], "chunked");
    const [good] = await revisions(job);
    // What a failed verification leaves, plus a key of a later feature (scrub's verified_at).
    await Deno.writeTextFile(
      join(job, "BadRevision00000000000.rev"),
      "backend: chunked\nerror: checksum mismatch\nparent: " + good.id +
        "\nstats:\n  bytes_written: 4194304\ntags:\n  - daily\n" +
        "timestamp: 2099-01-01 00:00:00.000000+00:00\ntrust: distrusted\n" +
        "uuid: BadRevision00000000000\nverified_at: 2099-01-02 03:04:05.000000+00:00\n",
    );
    const r = expectOk(await backy(["-b", job, "status", "--json"]));
    const list = JSON.parse(r.stdout);
    assert.equal(list.length, 2);
    assert.deepEqual(list[0], {
      id: good.id,
      timestamp: list[0].timestamp,
      state: "complete",
      tags: ["daily"],
      trust: good.trust ?? "trusted",
      verified_at: null,
      duration: good.duration,
      bytes_written: good.bytesWritten,
      parent: null,
      backend: "chunked",
      error: null,
      damage: [],
    });
    assert.match(list[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.deepEqual(list[1], {
      id: "BadRevision00000000000",
      timestamp: "2099-01-01T00:00:00.000Z",
      state: "incomplete",
      tags: ["daily"],
      trust: "distrusted",
      verified_at: "2099-01-02T03:04:05.000Z",
      duration: null,
      bytes_written: 4194304,
      parent: good.id,
      backend: "chunked",
      error: "checksum mismatch",
      damage: [],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plan --json: runs with ISO time, Unix seconds and tags", async () => {
  const dir = await tempDir("backy-json-");
  try {
    const conf = join(dir, "backy.conf");
    await Deno.writeTextFile(
      conf,
      `global: {base-dir: ${dir}}\nschedules:\n  d: {daily: {interval: 1d, keep: 3}}\n` +
        "jobs:\n  test01: {schedule: d, source: {type: file, filename: /x}}\n",
    );
    const r = expectOk(
      await backy(["plan", "-c", conf, "--now", "2015-09-01 07:06:47", "-n", "2", "--json"]),
    );
    // A new job runs at once; then test01's daily slot (spread 19971 s, spec 4.3): 05:32:51.
    assert.deepEqual(JSON.parse(r.stdout), [
      {
        job: "test01",
        time: "2015-09-01T07:06:47.000Z",
        timestamp: Date.parse("2015-09-01T07:06:47Z") / 1000,
        tags: ["daily"],
      },
      {
        job: "test01",
        time: "2015-09-02T05:32:51.000Z",
        timestamp: Date.parse("2015-09-02T05:32:51Z") / 1000,
        tags: ["daily"],
      },
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
