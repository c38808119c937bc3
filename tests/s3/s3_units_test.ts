/** Pure parts of the s3 store: settings, credentials, names, listings, GC and sync plans. */
import assert from "node:assert/strict";
import {
  parseCredentials,
  resolveS3,
  type S3Settings,
  serializeS3,
  validateS3,
} from "../../src/config/s3_config.ts";
import { parseSchedulerConfig } from "../../src/config/scheduler_config.ts";
import { ConfigError } from "../../src/util/errors.ts";
import { parseJobConfig, serializeJobConfig } from "../../src/repo/jobconfig.ts";
import { backoffMs, encodeKey, isTransient, parseListing } from "../../src/store/s3_client.ts";
import {
  chunkKey,
  chunkOfKey,
  decodeDigests,
  encodeDigests,
  isLive,
  jobFileOfKey,
} from "../../src/store/s3_layout.ts";
import { condemn, PrefixSet, sweepable } from "../../src/store/s3_gc.ts";
import { planPull } from "../../src/store/s3_sync.ts";
import { leaseConflict } from "../../src/store/s3_lease.ts";

const fail = (key: string | undefined, problem: string): never => {
  throw new Error(`${key ?? "-"}: ${problem}`);
};

Deno.test("validateS3: defaults, durations, and every kind of bad value", () => {
  assert.deepEqual(validateS3({ bucket: "backups" }, fail), {
    bucket: "backups",
    leaseTtl: 120,
    gcGrace: 86400,
    gcInterval: 86400,
    uploads: 8,
    attempts: 6,
  });
  const s = validateS3({
    bucket: "b-1.x",
    endpoint: "http://127.0.0.1:7480",
    "lease-ttl": "1m",
    "gc-grace": "2h",
    uploads: 4,
    job: "vm1",
  }, fail);
  assert.deepEqual(
    [s.endpoint, s.leaseTtl, s.gcGrace, s.uploads, s.job],
    ["http://127.0.0.1:7480", 60, 7200, 4, "vm1"],
  );
  const bad: [Record<string, unknown>, string][] = [
    [{}, "bucket: missing (the bucket every s3 job shares)"],
    [
      { bucket: "Up" },
      "bucket: invalid bucket name 'Up' (3-63 lowercase letters, digits, . and -)",
    ],
    [
      { bucket: "abc", endpoint: "ftp://x" },
      "endpoint: expected http(s)://HOST[:PORT], got 'ftp://x'",
    ],
    [
      { bucket: "abc", job: "a/b" },
      'job: invalid job name \'a/b\' (no "/", whitespace or leading ".")',
    ],
    [
      { bucket: "abc", "gc-grace": "soon" },
      "gc-grace: invalid duration 'soon' (e.g. 90s, 10m, 1d)",
    ],
    [{ bucket: "abc", uploads: 0 }, "uploads: expected an integer from 1 to 64"],
    [{ bucket: "abc", "lease-ttl": 5 }, "lease-ttl: must be at least 10s"],
    [
      { bucket: "abc", secret: "x" },
      "secret: unknown key (known: endpoint, bucket, region, credentials-file, profile, job, host, lease-ttl, gc-grace, gc-interval, uploads, attempts)",
    ],
  ];
  for (const [raw, msg] of bad) assert.throws(() => validateS3(raw, fail), { message: msg });
  assert.deepEqual(serializeS3(s), {
    endpoint: "http://127.0.0.1:7480",
    bucket: "b-1.x",
    job: "vm1",
    "lease-ttl": 60,
    "gc-grace": 7200,
    uploads: 4,
  });
});

Deno.test("credentials: AWS INI profiles; resolution order as the AWS tools", () => {
  const ini = [
    "# comment",
    "[default]",
    "aws_access_key_id = AK1",
    "aws_secret_access_key = SK1",
    "[profile backup]",
    "aws_access_key_id=AK2",
    "aws_secret_access_key=SK2",
    "aws_session_token = T2",
  ].join("\n");
  assert.deepEqual(parseCredentials(ini, "default"), {
    accessKeyId: "AK1",
    secretAccessKey: "SK1",
  });
  assert.deepEqual(parseCredentials(ini, "backup"), {
    accessKeyId: "AK2",
    secretAccessKey: "SK2",
    sessionToken: "T2",
  });
  assert.equal(parseCredentials(ini, "none"), undefined);
  const s: S3Settings = validateS3({ bucket: "bkt" }, fail);
  const files: Record<string, string> = { "/h/.aws/credentials": ini, "/etc/c": ini };
  const readFile = (p: string) => files[p];
  const env = {
    AWS_ENDPOINT_URL: "http://e:1",
    AWS_ACCESS_KEY_ID: "EK",
    AWS_SECRET_ACCESS_KEY: "ES",
  };
  const r1 = resolveS3(s, { env, readFile, home: "/h" });
  assert.deepEqual(
    [r1.endpoint, r1.region, r1.accessKeyId, r1.secretAccessKey],
    ["http://e:1", "us-east-1", "EK", "ES"],
  );
  const r2 = resolveS3(s, {
    env: { AWS_ENDPOINT_URL: "http://e:1", AWS_PROFILE: "backup", AWS_DEFAULT_REGION: "eu-1" },
    readFile,
    home: "/h",
  });
  assert.deepEqual([r2.accessKeyId, r2.region, r2.credentialsFrom], [
    "AK2",
    "eu-1",
    "/h/.aws/credentials [backup]",
  ]);
  const r3 = resolveS3({ ...s, credentialsFile: "/etc/c", endpoint: "http://x:2" }, {
    env,
    readFile,
  });
  assert.deepEqual([r3.endpoint, r3.accessKeyId], ["http://x:2", "AK1"]);
  assert.throws(() => resolveS3(s, { env: {}, readFile }), /no S3 endpoint/);
  assert.throws(
    () => resolveS3(s, { env: { AWS_ENDPOINT_URL: "http://e" }, readFile }),
    /no S3 credentials/,
  );
  assert.throws(
    () => resolveS3({ ...s, credentialsFile: "/missing" }, { env, readFile }),
    /credentials file \/missing does not exist/,
  );
});

Deno.test("scheduler config: global.s3 is validated at its line and copied into s3 jobs", () => {
  const text = (s3: string[], backend = "s3") =>
    [
      "global:",
      "  s3:",
      ...s3.map((l) => `    ${l}`),
      "schedules:",
      "  default:",
      "    daily: {interval: 1d, keep: 3}",
      "jobs:",
      "  vm1:",
      "    schedule: default",
      `    backend: ${backend}`,
      "    source: {type: file, filename: /x}",
    ].join("\n") + "\n";
  const cfg = parseSchedulerConfig(
    text(["bucket: shared", "endpoint: http://rgw:7480"]),
    "/etc/b.conf",
  );
  assert.deepEqual(
    [cfg.s3?.bucket, cfg.jobs.vm1.backend, cfg.jobs.vm1.s3?.job, cfg.jobs.vm1.s3?.endpoint],
    ["shared", "s3", "vm1", "http://rgw:7480"],
  );
  const err = (t: string) => {
    try {
      parseSchedulerConfig(t, "b.conf");
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      return e.message;
    }
    assert.fail("no error");
  };
  assert.match(
    err(text(["bucket: shared", "uploads: 100"])),
    /^b\.conf:4: .*expected an integer from 1 to 64/,
  );
  const noS3 = text(["bucket: x"]).split("\n").slice(3).join("\n");
  assert.match(err(noS3), /b\.conf:7: .*backend s3 needs an s3 section in global/);
});

Deno.test("job config: backend s3 round-trips with its s3 mapping", () => {
  const text = "type: file\nfilename: /img\nbackend: s3\ns3:\n  bucket: shared\n  job: vm1\n";
  const cfg = parseJobConfig(text, "config");
  assert.deepEqual([cfg.backend, cfg.s3?.bucket, cfg.s3?.job], ["s3", "shared", "vm1"]);
  assert.equal(serializeJobConfig(cfg), text);
  assert.throws(() => parseJobConfig("type: file\nfilename: /i\nbackend: s3\n", "c"), {
    message: "job config c: backend s3 and an s3 mapping go together",
  });
  assert.throws(
    () => parseJobConfig("type: file\nfilename: /i\nbackend: s3\ns3: {bucket: B}\n", "c"),
    /job config c: s3\.bucket: invalid bucket name 'B'/,
  );
});

Deno.test("s3 client: key encoding, retry policy, listings", () => {
  assert.equal(encodeKey("jobs/vm (1)/a+b*c.rev"), "jobs/vm%20%281%29/a%2Bb%2Ac.rev");
  assert.equal(isTransient(503), true);
  assert.equal(isTransient(429), true);
  assert.equal(isTransient(400, "SlowDown"), true);
  assert.equal(isTransient(403, "AccessDenied"), false);
  assert.equal(isTransient(404), false);
  assert.deepEqual([1, 2, 3, 6, 9].map((n) => backoffMs(n, 0)), [125, 250, 500, 4000, 4000]);
  assert.deepEqual([1, 6].map((n) => backoffMs(n, 1)), [250, 8000]);
  const xml = `<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated>` +
    `<Contents><Key>jobs/vm%201/x.rev</Key><LastModified>2026-11-30T10:00:00.000Z</LastModified>` +
    `<ETag>&quot;abc&quot;</ETag><Size>12</Size></Contents>` +
    `<NextContinuationToken>tok&amp;1</NextContinuationToken></ListBucketResult>`;
  assert.deepEqual(parseListing(xml), {
    objects: [{
      key: "jobs/vm 1/x.rev",
      size: 12,
      lastModified: Date.parse("2026-11-30T10:00:00Z"),
      etag: "abc",
    }],
    next: "tok&1",
  });
});

Deno.test("s3 layout: chunk keys, job files, digest lists", () => {
  const d = new Uint8Array(32).map((_, i) => i);
  const key = chunkKey(d);
  assert.equal(key, "chunks/00/000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  assert.equal(chunkOfKey(key), key.slice(10));
  assert.equal(
    chunkOfKey("chunks/01/000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
    undefined,
  );
  assert.equal(chunkOfKey("chunks/00/0001.tmp"), undefined);
  assert.deepEqual(jobFileOfKey("jobs/vm1/abc.index"), { job: "vm1", id: "abc", kind: "index" });
  assert.equal(jobFileOfKey("jobs/vm1/config"), undefined);
  const list = ["ab".repeat(32), "01".repeat(32)];
  assert.deepEqual([...decodeDigests(encodeDigests(list))], list);
  assert.throws(() => decodeDigests(new Uint8Array(33)), /multiple of 32/);
});

Deno.test("gc plans: condemn unreferenced old chunks; sweep what no writer keeps", () => {
  const chunks = [
    { digest: "a", lastModified: 1000 },
    { digest: "b", lastModified: 1000 },
    { digest: "c", lastModified: 5000 }, // too young
    { digest: "d", lastModified: 4999 },
  ];
  assert.deepEqual(condemn(chunks, new Set(["a"]), 5000), { condemned: ["b", "d"], kept: 2 });
  assert.deepEqual(sweepable(new Set(["b", "d", "e"]), new Set(["d"]), new Set(["e"])), ["b"]);
});

Deno.test("leases: live by the server clock with a margin; same host dead process is stale", () => {
  const lease = { id: "x", host: "h1", pid: 99999999, op: "backup", started: 0, expires: 10_000 };
  assert.equal(isLive(lease, 14_999), true);
  assert.equal(isLive(lease, 15_000), false);
  assert.match(
    leaseConflict(lease, "h2", 1000)!,
    /^held by host 'h1' \(backup, pid 99999999\) until 1970-01-01T00:00:10Z/,
  );
  assert.equal(leaseConflict(lease, "h2", 20_000), undefined, "expired");
  assert.equal(leaseConflict(lease, "h1", 1000, () => false), undefined, "its process is gone");
  assert.match(leaseConflict(lease, "h1", 1000, () => true)!, /held by host 'h1'/);
});

Deno.test("sync plan: download, push the unpublished, drop what another host removed", () => {
  const remote = new Map([
    ["r1", { revEtag: "m1", hasIndex: true }],
    ["r2", { revEtag: "m2x", hasIndex: true }], // re-tagged elsewhere
    ["r3", { revEtag: "m3", hasIndex: true }], // new elsewhere
    ["r5", { hasIndex: true }], // our unpublished revision
  ]);
  const l = (
    md5: string,
    extra: Partial<{ complete: boolean; s3: boolean; hasIndex: boolean }> = {},
  ) => ({
    md5,
    complete: true,
    s3: true,
    hasIndex: true,
    ...extra,
  });
  const local = new Map([
    ["r1", l("m1")],
    ["r2", l("m2")],
    ["r4", l("m4")], // removed elsewhere
    ["r5", l("m5")],
    ["r6", l("m6", { complete: false })], // incomplete: the backup cleans it
    ["r7", l("m7", { s3: false })], // another backend's
  ]);
  assert.deepEqual(planPull(remote, local), [
    { do: "download", id: "r2", index: false },
    { do: "download", id: "r3", index: true },
    { do: "remove-local", id: "r4" },
    { do: "push", id: "r5" },
  ]);
});

Deno.test("gc marking: a compact prefix set; a shared prefix only keeps more", () => {
  const d = (first: number, rest: number) => {
    const out = new Uint8Array(32).fill(rest);
    out[0] = first;
    return out;
  };
  const hexOf = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  const set = new PrefixSet();
  for (let i = 0; i < 5000; i++) set.add(d(i % 251, i % 7)); // duplicates collapse
  assert.equal(set.size, 251 * 7); // the (i % 251, i % 7) pairs repeat every 1757
  assert.equal(set.has(hexOf(d(3, 3))), true);
  assert.equal(set.has(hexOf(d(3, 200))), false);
  const twin = d(3, 3);
  twin[31] = 0x99; // same first 8 bytes: counted as referenced (kept)
  assert.equal(set.has(hexOf(twin)), true);
  const chunks = [d(9, 100), d(9, 2)].map((x) => ({ digest: hexOf(x), lastModified: 0 }));
  assert.deepEqual(condemn(chunks, set, 1), { condemned: [hexOf(d(9, 100))], kept: 1 });
});
