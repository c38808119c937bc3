import assert from "node:assert/strict";
import { join, relative } from "node:path";
import {
  jobNameProblem,
  loadSchedulerConfig,
  parseSchedulerConfig,
  type SchedulerConfig,
  validateSource,
} from "../../src/config/scheduler_config.ts";
import { ConfigError } from "../../src/util/errors.ts";

/** YAML text from lines, so line numbers in expectations are easy to count. */
function y(...lines: string[]): string {
  return lines.join("\n") + "\n";
}

/** The message of the ConfigError that parsing `text` as `backy.conf` raises. */
function errorOf(text: string, file = "backy.conf"): string {
  try {
    parseSchedulerConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${e}`);
    return e.message;
  }
  assert.fail("no error raised");
}

/** Records in the result have no prototype; compare them as plain data. */
function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value));
}

/** A valid config body after the given jobs section lines (schedule `default` on lines 1-4). */
function withJobs(...jobLines: string[]): string {
  return y(
    "schedules:",
    "  default:",
    "    daily: {interval: 1d, keep: 9}",
    "    weekly: {interval: 7d, keep: 5}",
    "jobs:",
    ...jobLines,
  );
}

const FULL = y(
  "global:",
  "  base-dir: /srv/backy",
  "  worker-limit: 2",
  "  status-file: /var/lib/backy/status",
  "  status-interval: 30",
  '  telnet-addrs: "::1, 127.0.0.1"',
  "  telnet-port: 6023",
  "  backup-completed-callback: /usr/local/bin/backup-done",
  "schedules:",
  "  default:",
  "    daily: {interval: 1d, keep: 9}",
  "    weekly: {interval: 7d, keep: 5}",
  "  hourly:",
  "    hourly: {interval: 1h, keep: 24}",
  "jobs:",
  "  test01:",
  "    schedule: default",
  "    backend: chunked",
  "    source:",
  "      type: file",
  "      filename: /srv/images/test01.img",
  "  test02:",
  "    schedule: hourly",
  "    source: {type: ceph-rbd, pool: rbd.hdd, image: test02.root, full-always: true}",
  "  test03:",
  "    schedule: default",
  "    backend: cow",
  "    source:",
  "      vm: test03",
  "      type: flyingcircus",
  "      pool: rbd.ssd",
  "      image: test03.root",
  "      consul_acl_token: secret",
);

const DAILY_WEEKLY = {
  daily: { interval: 86400, keep: 9 },
  weekly: { interval: 604800, keep: 5 },
};

Deno.test("full config parses into the typed result", () => {
  const config = parseSchedulerConfig(FULL, "/etc/backy.conf");
  const expected: SchedulerConfig = {
    file: "/etc/backy.conf",
    baseDir: "/srv/backy",
    workerLimit: 2,
    statusFile: "/var/lib/backy/status",
    statusInterval: 30,
    telnetAddrs: ["::1", "127.0.0.1"],
    telnetPort: 6023,
    completedCallback: "/usr/local/bin/backup-done",
    callbackTimeout: 60,
    backupTimeout: 86400,
    criticalFailures: 3,
    verifyEvery: 30 * 86400,
    schedules: {
      default: DAILY_WEEKLY,
      hourly: { hourly: { interval: 3600, keep: 24 } },
    },
    jobs: {
      test01: {
        name: "test01",
        schedule: "default",
        scheduleDef: DAILY_WEEKLY,
        backend: "chunked",
        source: { type: "file", filename: "/srv/images/test01.img" },
      },
      test02: {
        name: "test02",
        schedule: "hourly",
        scheduleDef: { hourly: { interval: 3600, keep: 24 } },
        source: { type: "ceph-rbd", pool: "rbd.hdd", image: "test02.root", "full-always": true },
      },
      test03: {
        name: "test03",
        schedule: "default",
        scheduleDef: DAILY_WEEKLY,
        backend: "cow",
        source: {
          vm: "test03",
          type: "flyingcircus",
          pool: "rbd.ssd",
          image: "test03.root",
          consul_acl_token: "secret",
        },
      },
    },
  };
  assert.deepEqual(plain(config), expected);
  // The source is kept as written, key order included, so the job `config` copy matches it.
  assert.deepEqual(Object.keys(config.jobs.test03.source), [
    "vm",
    "type",
    "pool",
    "image",
    "consul_acl_token",
  ]);
  assert.equal("backend" in config.jobs.test02, false);
});

Deno.test("defaults apply when global is absent or empty", () => {
  const jobs = ["  test01: {schedule: default, source: {type: file, filename: a.img}}"];
  for (const text of [withJobs(...jobs), "global:\n" + withJobs(...jobs)]) {
    const config = parseSchedulerConfig(text, "/etc/backy.conf");
    assert.equal(config.baseDir, "/srv/backy");
    assert.equal(config.workerLimit, 1);
    assert.equal(config.statusFile, "/srv/backy/status");
    assert.equal(config.statusInterval, 30);
    assert.deepEqual(config.telnetAddrs, ["::1", "127.0.0.1"]);
    assert.equal(config.telnetPort, 6023);
    assert.equal("completedCallback" in config, false);
  }
});

Deno.test("status-file defaults to <base-dir>/status", () => {
  const config = parseSchedulerConfig(
    y("global:", "  base-dir: /backup/", "schedules:", "jobs:"),
    "/etc/backy.conf",
  );
  assert.equal(config.baseDir, "/backup");
  assert.equal(config.statusFile, "/backup/status");
});

Deno.test("relative paths are resolved against the config file's directory", () => {
  const text = y(
    "global:",
    "  base-dir: data/",
    "  status-file: ../run/status",
    "schedules:",
    "jobs:",
  );
  const config = parseSchedulerConfig(text, "/etc/backy/backy.conf");
  assert.equal(config.baseDir, "/etc/backy/data");
  assert.equal(config.statusFile, "/etc/run/status");
  const rel = parseSchedulerConfig(
    y("global:", "  base-dir: data", "schedules:", "jobs:"),
    "conf/b.yaml",
  );
  assert.equal(rel.baseDir, "conf/data");
  assert.equal(rel.statusFile, "conf/data/status");
});

Deno.test("empty schedules and jobs sections are an idle config", () => {
  const config = parseSchedulerConfig(y("schedules:", "jobs: {}"), "c");
  assert.deepEqual(plain(config.schedules), {});
  assert.deepEqual(plain(config.jobs), {});
});

Deno.test("telnet-addrs: comma-separated string, list, or empty for none", () => {
  const addrs = (value: string) =>
    parseSchedulerConfig(y("global:", `  telnet-addrs: ${value}`, "schedules:", "jobs:"), "c")
      .telnetAddrs;
  assert.deepEqual(addrs('" ::1 ,127.0.0.1 , 10.0.0.1"'), ["::1", "127.0.0.1", "10.0.0.1"]);
  assert.deepEqual(addrs("[::1, 192.168.1.1]"), ["::1", "192.168.1.1"]);
  assert.deepEqual(addrs("localhost"), ["localhost"]);
  assert.deepEqual(addrs('""'), []);
  assert.deepEqual(addrs("[]"), []);
});

Deno.test("status-interval accepts seconds or a duration string", () => {
  const interval = (value: string) =>
    parseSchedulerConfig(y("global:", `  status-interval: ${value}`, "schedules:", "jobs:"), "c")
      .statusInterval;
  assert.equal(interval("45"), 45);
  assert.equal(interval("2m"), 120);
  assert.equal(interval('"10s"'), 10);
});

Deno.test("interval units follow spec 4.2", () => {
  const text = y(
    "schedules:",
    "  all:",
    "    w: {interval: 1w, keep: 1}",
    "    d: {interval: 2d, keep: 2}",
    "    h: {interval: 3h, keep: 3}",
    "    m: {interval: 25m, keep: 4}",
    "    s: {interval: 10s, keep: 5}",
    "    n: {interval: 5, keep: 6}",
    "jobs:",
  );
  assert.deepEqual(plain(parseSchedulerConfig(text, "c").schedules.all), {
    w: { interval: 604800, keep: 1 },
    d: { interval: 172800, keep: 2 },
    h: { interval: 10800, keep: 3 },
    m: { interval: 1500, keep: 4 },
    s: { interval: 10, keep: 5 },
    n: { interval: 5, keep: 6 },
  });
});

Deno.test("job names are taken as written and never collide with Object properties", () => {
  const config = parseSchedulerConfig(
    withJobs(
      "  01: {schedule: default, source: {type: file, filename: a}}",
      "  __proto__: {schedule: default, source: {type: file, filename: b}}",
      "  constructor: {schedule: default, source: {type: file, filename: c}}",
      "  vm.example.com: {schedule: default, source: {type: file, filename: d}}",
    ),
    "c",
  );
  assert.deepEqual(Object.keys(config.jobs), ["01", "__proto__", "constructor", "vm.example.com"]);
  assert.equal(config.jobs["__proto__"].source.filename, "b");
  assert.equal(Object.hasOwn(config.jobs, "toString"), false);
  assert.equal(config.jobs["toString"], undefined);
});

Deno.test("anchors and aliases may share schedules and sources", () => {
  const config = parseSchedulerConfig(
    y(
      "schedules:",
      "  default: &std",
      "    daily: {interval: 1d, keep: 9}",
      "  copy: *std",
      "jobs:",
      "  a: {schedule: copy, source: &src {type: file, filename: x}}",
      "  b: {schedule: default, source: *src}",
    ),
    "c",
  );
  assert.deepEqual(plain(config.schedules.copy), { daily: { interval: 86400, keep: 9 } });
  assert.deepEqual(config.jobs.b.source, { type: "file", filename: "x" });
});

Deno.test("flyingcircus source keeps explicit null token and accepts all options", () => {
  const config = parseSchedulerConfig(
    withJobs(
      "  vm1:",
      "    schedule: default",
      "    source:",
      "      type: flyingcircus",
      "      pool: rbd",
      "      image: vm1.root",
      "      vm: vm1",
      "      consul_acl_token: null",
      "      consul_url: https://consul.example:8501",
      "      snapshot_timeout: 2m",
      "      full-always: false",
    ),
    "c",
  );
  assert.deepEqual(config.jobs.vm1.source, {
    type: "flyingcircus",
    pool: "rbd",
    image: "vm1.root",
    vm: "vm1",
    consul_acl_token: null,
    consul_url: "https://consul.example:8501",
    snapshot_timeout: "2m",
    "full-always": false,
  });
});

// --- validateSource (shared with the job directory's config) ---

Deno.test("validateSource returns the mapping and typed settings with defaults", () => {
  const where = { file: "/srv/backy/vm1/config", line: 1 };
  assert.deepEqual(validateSource({ type: "file", filename: "input-file" }, where), {
    mapping: { type: "file", filename: "input-file" },
    settings: { type: "file", filename: "input-file" },
  });
  assert.deepEqual(validateSource({ type: "ceph-rbd", pool: "test", image: "test04" }, where), {
    mapping: { type: "ceph-rbd", pool: "test", image: "test04" },
    settings: { type: "ceph-rbd", pool: "test", image: "test04", fullAlways: false },
  });
  const fc = { type: "flyingcircus", pool: "p", image: "i", vm: "v", consul_acl_token: "t" };
  assert.deepEqual(validateSource(fc, where), {
    mapping: fc,
    settings: {
      type: "flyingcircus",
      pool: "p",
      image: "i",
      vm: "v",
      fullAlways: false,
      consulAclToken: "t",
      consulUrl: "http://127.0.0.1:8500",
      snapshotTimeout: 90,
    },
  });
  assert.deepEqual(
    validateSource(
      { type: "flyingcircus", pool: "p", image: "i", vm: "v", snapshot_timeout: 30 },
      where,
    )
      .settings,
    {
      type: "flyingcircus",
      pool: "p",
      image: "i",
      vm: "v",
      fullAlways: false,
      consulAclToken: null,
      consulUrl: "http://127.0.0.1:8500",
      snapshotTimeout: 30,
    },
  );
});

Deno.test("validateSource errors name the file, the given line and the key", () => {
  const message = (source: unknown, where: { file: string; line?: number; path?: string }) => {
    try {
      validateSource(source, where);
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      return e.message;
    }
    assert.fail("no error raised");
  };
  assert.equal(
    message({ type: "file" }, { file: "vm1/config", line: 1 }),
    "vm1/config:1: source.filename: required key missing",
  );
  assert.equal(
    message({ type: "ceph-rbd", pool: "p", image: 5 }, { file: "vm1/config" }),
    "vm1/config: source.image: expected a string, got integer 5",
  );
  assert.equal(
    message({ type: "file", filename: "x", backend: "cow" }, { file: "c", line: 3, path: "" }),
    "c:3: backend: unknown key for source type file (expected type or filename)",
  );
  assert.equal(
    message("file", { file: "c", line: 1 }),
    'c:1: source: expected a mapping, got string "file"',
  );
});

Deno.test("jobNameProblem explains what is wrong with a name", () => {
  assert.equal(jobNameProblem("test01"), undefined);
  assert.equal(jobNameProblem("vm.example.com"), undefined);
  assert.equal(jobNameProblem("x".repeat(255)), undefined);
  assert.equal(jobNameProblem("x".repeat(256)), "must be at most 255 bytes long");
  assert.equal(jobNameProblem("ä".repeat(128)), "must be at most 255 bytes long");
});

// --- loadSchedulerConfig ---

Deno.test("loadSchedulerConfig reads the file and makes paths absolute", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "backy.conf");
    await Deno.writeTextFile(file, y("global:", "  base-dir: data", "schedules:", "jobs:"));
    const relFile = relative(Deno.cwd(), file);
    const config = await loadSchedulerConfig(relFile);
    assert.equal(config.file, relFile);
    assert.equal(config.baseDir, join(dir, "data"));
    assert.equal(config.statusFile, join(dir, "data", "status"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSchedulerConfig: unreadable file is a ConfigError without line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "missing.conf");
    const reason = await Deno.readTextFile(file).then(
      () => assert.fail("file exists"),
      (e: Error) => e.message,
    );
    await assert.rejects(loadSchedulerConfig(file), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `${file}: cannot read config: ${reason}`);
      assert.equal(e.line, undefined);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSchedulerConfig: validation errors carry the file name as given", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "backy.conf");
    await Deno.writeTextFile(file, y("schedules:", "jobs:", "extra: 1"));
    await assert.rejects(loadSchedulerConfig(file), {
      message: `${file}:3: extra: unknown key (expected global, schedules or jobs)`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- errors: one line, file:line: key.path: problem ---

Deno.test("YAML syntax errors report their line", () => {
  assert.equal(
    errorOf(y("schedules:", "  default: {daily: {interval: 1d, keep: 9}", "jobs:")),
    "backy.conf:3: invalid YAML: Flow map in block collection must be sufficiently indented and end with a }",
  );
  assert.equal(
    errorOf(y("schedules:", "  a: 1", " b: 2")),
    "backy.conf:3: invalid YAML: All mapping items must start at the same column",
  );
  assert.equal(
    errorOf(y("schedules:", "jobs:", "---", "more: 1")),
    "backy.conf:3: invalid YAML: the file must contain a single YAML document",
  );
  assert.equal(
    errorOf(withJobs("  a: {schedule: default, source: *nothing}")),
    "backy.conf:6: invalid YAML: alias *nothing has no matching anchor &nothing",
  );
});

Deno.test("top level must be a mapping with schedules and jobs", () => {
  assert.equal(errorOf(""), "backy.conf:1: schedules: required key missing");
  assert.equal(errorOf("# only a comment\n"), "backy.conf:1: schedules: required key missing");
  assert.equal(errorOf(y("schedules:")), "backy.conf:1: jobs: required key missing");
  assert.equal(errorOf(y("jobs:")), "backy.conf:1: schedules: required key missing");
  assert.equal(
    errorOf(y("- global")),
    "backy.conf:1: top level: expected a mapping with global, schedules and jobs, got a list",
  );
});

Deno.test("unknown keys are rejected everywhere", () => {
  assert.equal(
    errorOf(y("config:", "  base-dir: /srv", "schedules:", "jobs:")),
    "backy.conf:1: config: unknown key (expected global, schedules or jobs)",
  );
  assert.equal(
    errorOf(y("global:", "  worker-limit: 2", "  base_dir: /srv", "schedules:", "jobs:")),
    "backy.conf:3: global.base_dir: unknown key (expected base-dir, worker-limit, status-file, " +
      "status-interval, telnet-addrs, telnet-port, backup-completed-callback, " +
      "backup-failed-callback, callback-timeout, backup-timeout, critical-failures, " +
      "verify-every, verify-budget, monitoring-group, http-addrs, http-port, http-tokens, http-tls-cert, http-tls-key or s3)",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", "    daily: {interval: 1d, keep: 9, max: 3}", "jobs:")),
    "backy.conf:3: schedules.default.daily.max: unknown key (expected interval or keep)",
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default", "    sla: 1d")),
    "backy.conf:8: jobs.test01.sla: unknown key (expected schedule, backend, verify or source)",
  );
  assert.equal(
    errorOf(
      withJobs(
        "  test01:",
        "    schedule: default",
        "    source:",
        "      type: file",
        "      filename: x",
        "      pool: y",
      ),
    ),
    "backy.conf:11: jobs.test01.source.pool: unknown key for source type file (expected type or filename)",
  );
  assert.equal(
    errorOf(
      withJobs("  t: {schedule: default, source: {type: ceph-rbd, pool: p, image: i, vm: v}}"),
    ),
    "backy.conf:6: jobs.t.source.vm: unknown key for source type ceph-rbd " +
      "(expected type, pool, image or full-always)",
  );
  assert.equal(
    errorOf(withJobs("  t: {schedule: default, source: {type: file, filename: f}, <<: {a: 1}}")),
    'backy.conf:6: jobs.t."<<": unknown key (expected schedule, backend, verify or source)',
  );
});

Deno.test("wrong value types", () => {
  assert.equal(
    errorOf(y("global:", "  base-dir: 5", "schedules:", "jobs:")),
    "backy.conf:2: global.base-dir: expected a string, got integer 5",
  );
  assert.equal(
    errorOf(y("global:", "  base-dir:", "schedules:", "jobs:")),
    "backy.conf:2: global.base-dir: expected a string, got nothing",
  );
  assert.equal(
    errorOf(y("global:", '  base-dir: ""', "schedules:", "jobs:")),
    "backy.conf:2: global.base-dir: must not be empty",
  );
  assert.equal(
    errorOf(y("global:", '  worker-limit: "2"', "schedules:", "jobs:")),
    'backy.conf:2: global.worker-limit: expected a positive integer, got string "2"',
  );
  assert.equal(
    errorOf(y("global:", "  worker-limit: 1.5", "schedules:", "jobs:")),
    "backy.conf:2: global.worker-limit: expected a positive integer, got number 1.5",
  );
  assert.equal(
    errorOf(y("global:", '  telnet-port: "6023"', "schedules:", "jobs:")),
    'backy.conf:2: global.telnet-port: expected an integer from 1 to 65535, got string "6023"',
  );
  assert.equal(
    errorOf(y("global:", "  status-interval: true", "schedules:", "jobs:")),
    "backy.conf:2: global.status-interval: expected a duration such as 90s or 1d, got boolean true",
  );
  assert.equal(
    errorOf(y("global:", "  telnet-addrs: 6023", "schedules:", "jobs:")),
    "backy.conf:2: global.telnet-addrs: expected addresses as a comma-separated string or a list, " +
      "got integer 6023",
  );
  assert.equal(
    errorOf(y("global:", "  telnet-addrs:", "    - ::1", "    - {a: 1}", "schedules:", "jobs:")),
    "backy.conf:4: global.telnet-addrs[1]: expected a string, got a mapping",
  );
  assert.equal(
    errorOf(y("global:", "  backup-completed-callback: [a]", "schedules:", "jobs:")),
    "backy.conf:2: global.backup-completed-callback: expected a string, got a list",
  );
  assert.equal(
    errorOf(y("global: /srv/backy", "schedules:", "jobs:")),
    'backy.conf:1: global: expected a mapping, got string "/srv/backy"',
  );
  assert.equal(
    errorOf(y("schedules: [daily]", "jobs:")),
    "backy.conf:1: schedules: expected a mapping, got a list",
  );
  assert.equal(
    errorOf(y("schedules:", "  default: [daily]", "jobs:")),
    "backy.conf:2: schedules.default: expected a mapping of tags, got a list",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", "    daily: 1d", "jobs:")),
    'backy.conf:3: schedules.default.daily: expected a mapping with interval and keep, got string "1d"',
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", '    daily: {interval: 1d, keep: "9"}', "jobs:")),
    'backy.conf:3: schedules.default.daily.keep: expected a positive integer, got string "9"',
  );
  assert.equal(
    errorOf(withJobs("  test01: default")),
    'backy.conf:6: jobs.test01: expected a mapping, got string "default"',
  );
  assert.equal(
    errorOf(
      withJobs("  test01:", "    schedule: [default]", "    source: {type: file, filename: x}"),
    ),
    "backy.conf:7: jobs.test01.schedule: expected a string, got a list",
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default", "    source: /srv/images/test01.img")),
    'backy.conf:8: jobs.test01.source: expected a mapping, got string "/srv/images/test01.img"',
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default", "    source:")),
    "backy.conf:8: jobs.test01.source: expected a mapping, got nothing",
  );
  assert.equal(
    errorOf(withJobs("  t:", "    schedule: default", "    source: {type: 5}")),
    "backy.conf:8: jobs.t.source.type: expected a string, got integer 5",
  );
  assert.equal(
    errorOf(
      withJobs(
        "  t:",
        "    schedule: default",
        "    source: {type: ceph-rbd, pool: p, image: i, full-always: yes}",
      ),
    ),
    'backy.conf:8: jobs.t.source.full-always: expected true or false, got string "yes"',
  );
  assert.equal(
    errorOf(withJobs("  t:", "    schedule: default", "    source: {type: file, filename: 17}")),
    "backy.conf:8: jobs.t.source.filename: expected a string, got integer 17",
  );
  assert.equal(
    errorOf(
      withJobs(
        "  t:",
        "    schedule: default",
        "    source: {type: flyingcircus, pool: p, image: i, vm: v, consul_acl_token: 1234}",
      ),
    ),
    "backy.conf:8: jobs.t.source.consul_acl_token: expected a string, got integer 1234",
  );
  assert.equal(
    errorOf(withJobs("  [a, b]: {schedule: default}")),
    "backy.conf:6: jobs: keys must be plain names, got a list",
  );
});

Deno.test("missing required keys are blamed on the parent key's line", () => {
  assert.equal(
    errorOf(withJobs("  test01:", "    source: {type: file, filename: x}")),
    "backy.conf:6: jobs.test01.schedule: required key missing",
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default")),
    "backy.conf:6: jobs.test01.source: required key missing",
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default", "    source:", "      filename: x")),
    "backy.conf:8: jobs.test01.source.type: required key missing",
  );
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: default", "    source:", "      type: file")),
    "backy.conf:8: jobs.test01.source.filename: required key missing",
  );
  assert.equal(
    errorOf(withJobs("  t:", "    schedule: default", "    source: {type: ceph-rbd, image: i}")),
    "backy.conf:8: jobs.t.source.pool: required key missing",
  );
  assert.equal(
    errorOf(withJobs("  t:", "    schedule: default", "    source: {type: ceph-rbd, pool: p}")),
    "backy.conf:8: jobs.t.source.image: required key missing",
  );
  assert.equal(
    errorOf(
      withJobs(
        "  t:",
        "    schedule: default",
        "    source: {type: flyingcircus, pool: p, image: i}",
      ),
    ),
    "backy.conf:8: jobs.t.source.vm: required key missing",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", "    daily: {keep: 9}", "jobs:")),
    "backy.conf:3: schedules.default.daily.interval: required key missing",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", "    daily:", "      interval: 1d", "jobs:")),
    "backy.conf:3: schedules.default.daily.keep: required key missing",
  );
});

Deno.test("a job must name an existing schedule", () => {
  assert.equal(
    errorOf(withJobs("  test01:", "    schedule: weekly", "    source: {type: file, filename: x}")),
    'backy.conf:7: jobs.test01.schedule: no schedule named "weekly" (defined: default)',
  );
  assert.equal(
    errorOf(
      y("schedules: {}", "jobs:", "  t: {schedule: default, source: {type: file, filename: x}}"),
    ),
    'backy.conf:3: jobs.t.schedule: no schedule named "default" (no schedules defined)',
  );
  assert.equal(
    errorOf(withJobs("  t: {schedule: constructor, source: {type: file, filename: x}}")),
    'backy.conf:6: jobs.t.schedule: no schedule named "constructor" (defined: default)',
  );
});

Deno.test("bad intervals", () => {
  const interval = (value: string) =>
    errorOf(y("schedules:", "  default:", `    daily: {interval: ${value}, keep: 9}`, "jobs:"));
  const hint = "(expected a positive integer with optional unit w, d, h, m or s)";
  assert.equal(
    interval("1x"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "1x" ${hint}`,
  );
  assert.equal(
    interval("0"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "0" ${hint}`,
  );
  assert.equal(
    interval("0d"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "0d" ${hint}`,
  );
  assert.equal(
    interval("-1d"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "-1d" ${hint}`,
  );
  assert.equal(
    interval("1.5d"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "1.5d" ${hint}`,
  );
  assert.equal(
    interval("1.5"),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "1.5" ${hint}`,
  );
  assert.equal(
    interval('""'),
    `backy.conf:3: schedules.default.daily.interval: invalid duration "" ${hint}`,
  );
  assert.equal(
    interval("[1d]"),
    "backy.conf:3: schedules.default.daily.interval: expected a duration such as 90s or 1d, got a list",
  );
  assert.equal(
    errorOf(y("global:", "  status-interval: 0", "schedules:", "jobs:")),
    `backy.conf:2: global.status-interval: invalid duration "0" ${hint}`,
  );
  assert.equal(
    errorOf(
      withJobs(
        "  t:",
        "    schedule: default",
        "    source: {type: flyingcircus, pool: p, image: i, vm: v, snapshot_timeout: soon}",
      ),
    ),
    `backy.conf:8: jobs.t.source.snapshot_timeout: invalid duration "soon" ${hint}`,
  );
});

Deno.test("keep must be a positive integer", () => {
  const keep = (value: string) =>
    errorOf(y("schedules:", "  default:", `    daily: {interval: 1d, keep: ${value}}`, "jobs:"));
  assert.equal(
    keep("0"),
    "backy.conf:3: schedules.default.daily.keep: expected a positive integer, got integer 0",
  );
  assert.equal(
    keep("-1"),
    "backy.conf:3: schedules.default.daily.keep: expected a positive integer, got integer -1",
  );
  assert.equal(
    keep("1.5"),
    "backy.conf:3: schedules.default.daily.keep: expected a positive integer, got number 1.5",
  );
  assert.equal(
    keep(""),
    "backy.conf:3: schedules.default.daily.keep: expected a positive integer, got nothing",
  );
});

Deno.test("a schedule needs at least one tag; tag names are checked", () => {
  assert.equal(
    errorOf(y("schedules:", "  default: {}", "jobs:")),
    "backy.conf:2: schedules.default: schedule has no tags",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", "jobs:")),
    "backy.conf:2: schedules.default: schedule has no tags",
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", '    "manual:x": {interval: 1d, keep: 1}', "jobs:")),
    'backy.conf:3: schedules.default."manual:x": invalid tag name (the prefix "manual:" is reserved for manual backups)',
  );
  assert.equal(
    errorOf(y("schedules:", "  default:", '    "a,b": {interval: 1d, keep: 1}', "jobs:")),
    'backy.conf:3: schedules.default."a,b": invalid tag name (must not contain commas, whitespace or control characters)',
  );
});

Deno.test("duplicate keys name the path and both lines", () => {
  assert.equal(
    errorOf(
      withJobs(
        "  test01:",
        "    schedule: default",
        "    source: {type: file, filename: a}",
        "  test02: {schedule: default, source: {type: file, filename: b}}",
        "  test01:",
        "    schedule: default",
        "    source: {type: file, filename: c}",
      ),
    ),
    "backy.conf:10: jobs.test01: duplicate key (first defined at line 6)",
  );
  assert.equal(
    errorOf(y("global:", "  worker-limit: 1", "  worker-limit: 2", "schedules:", "jobs:")),
    "backy.conf:3: global.worker-limit: duplicate key (first defined at line 2)",
  );
  assert.equal(
    errorOf(withJobs("  t: {schedule: default, source: {type: file, filename: a, filename: b}}")),
    "backy.conf:6: jobs.t.source.filename: duplicate key (first defined at line 6)",
  );
  assert.equal(
    errorOf(y("schedules:", "jobs:", "schedules:")),
    "backy.conf:3: schedules: duplicate key (first defined at line 1)",
  );
});

Deno.test("unknown source type and backend", () => {
  assert.equal(
    errorOf(withJobs("  t:", "    schedule: default", "    source: {type: s3, bucket: b}")),
    'backy.conf:8: jobs.t.source.type: unknown source type "s3" (expected file, ceph-rbd or flyingcircus)',
  );
  assert.equal(
    errorOf(
      withJobs(
        "  t:",
        "    schedule: default",
        "    backend: cowfile",
        "    source: {type: file, filename: x}",
      ),
    ),
    'backy.conf:8: jobs.t.backend: unknown backend "cowfile" (expected cow, chunked or s3)',
  );
});

Deno.test("source values with bad content", () => {
  const src = (source: string) =>
    errorOf(withJobs("  t:", "    schedule: default", `    source: ${source}`));
  assert.equal(
    src("{type: ceph-rbd, pool: rbd, image: a/b}"),
    'backy.conf:8: jobs.t.source.image: invalid name "a/b" (must not contain "/", "@", whitespace or control characters)',
  );
  assert.equal(
    src("{type: ceph-rbd, pool: rbd, image: img@snap}"),
    'backy.conf:8: jobs.t.source.image: invalid name "img@snap" (must not contain "/", "@", whitespace or control characters)',
  );
  assert.equal(
    src("{type: ceph-rbd, pool: --no-progress, image: i}"),
    'backy.conf:8: jobs.t.source.pool: invalid name "--no-progress" (must not start with "-")',
  );
  assert.equal(
    src('{type: file, filename: ""}'),
    "backy.conf:8: jobs.t.source.filename: must not be empty",
  );
  assert.equal(
    src("{type: flyingcircus, pool: p, image: i, vm: v, consul_url: 127.0.0.1:8500}"),
    'backy.conf:8: jobs.t.source.consul_url: expected an http or https URL, got "127.0.0.1:8500"',
  );
});

Deno.test("job names that would escape or misuse the base directory", () => {
  const name = (key: string) =>
    errorOf(withJobs(`  ${key}: {schedule: default, source: {type: file, filename: x}}`));
  assert.equal(
    name('"../x"'),
    'backy.conf:6: jobs."../x": invalid job name (must not contain "/")',
  );
  assert.equal(name('"/"'), 'backy.conf:6: jobs."/": invalid job name (must not contain "/")');
  assert.equal(name("a/b"), 'backy.conf:6: jobs."a/b": invalid job name (must not contain "/")');
  assert.equal(name('"."'), 'backy.conf:6: jobs.".": invalid job name (must not start with ".")');
  assert.equal(name('".."'), 'backy.conf:6: jobs."..": invalid job name (must not start with ".")');
  assert.equal(
    name(".lock"),
    'backy.conf:6: jobs.".lock": invalid job name (must not start with ".")',
  );
  assert.equal(name('""'), 'backy.conf:6: jobs."": invalid job name (must not be empty)');
  assert.equal(
    name('"a\\0b"'),
    'backy.conf:6: jobs."a\\u0000b": invalid job name (must not contain NUL or control characters)',
  );
  assert.equal(
    name('"a\\x1bb"'),
    'backy.conf:6: jobs."a\\u001bb": invalid job name (must not contain NUL or control characters)',
  );
  assert.equal(
    name('"a b"'),
    'backy.conf:6: jobs."a b": invalid job name (must not contain whitespace)',
  );
  assert.equal(
    errorOf(
      y(
        "global: {base-dir: /srv/backy}",
        "schedules: {d: {d: {interval: 1d, keep: 1}}}",
        "jobs:",
        "  status: {schedule: d, source: {type: file, filename: x}}",
      ),
    ),
    "backy.conf:4: jobs.status: job directory would be the status file /srv/backy/status",
  );
});

Deno.test("telnet-port, worker-limit and telnet-addrs ranges", () => {
  const global = (line: string) => errorOf(y("global:", `  ${line}`, "schedules:", "jobs:"));
  assert.equal(
    global("telnet-port: 0"),
    "backy.conf:2: global.telnet-port: expected an integer from 1 to 65535, got integer 0",
  );
  assert.equal(
    global("telnet-port: 65536"),
    "backy.conf:2: global.telnet-port: expected an integer from 1 to 65535, got integer 65536",
  );
  assert.equal(
    global("worker-limit: 0"),
    "backy.conf:2: global.worker-limit: expected a positive integer, got integer 0",
  );
  assert.equal(
    global("worker-limit: -3"),
    "backy.conf:2: global.worker-limit: expected a positive integer, got integer -3",
  );
  assert.equal(
    global('telnet-addrs: "::1,, 127.0.0.1"'),
    'backy.conf:2: global.telnet-addrs: empty address in "::1,, 127.0.0.1"',
  );
  assert.equal(
    global('telnet-addrs: ["::1", " "]'),
    "backy.conf:2: global.telnet-addrs[1]: empty address",
  );
});

Deno.test("the first problem in checking order wins (global, schedules, jobs)", () => {
  assert.equal(
    errorOf(y("jobs:", "  ../x: {}", "schedules:", "  s: {}", "global:", "  telnet-port: 0")),
    "backy.conf:6: global.telnet-port: expected an integer from 1 to 65535, got integer 0",
  );
});

/** The global section with these lines, and empty schedules and jobs. */
function globals(...lines: string[]): string {
  return y("global:", ...lines.map((l) => `  ${l}`), "schedules:", "jobs:");
}

Deno.test("monitoring keys: callbacks, timeouts, critical-failures, monitoring-group", () => {
  const c = parseSchedulerConfig(
    globals(
      "backup-completed-callback: hooks/done.sh",
      "backup-failed-callback: page-oncall",
      "callback-timeout: 2m",
      "backup-timeout: 12h",
      "critical-failures: 5",
      "monitoring-group: nagios",
    ),
    "/etc/backy/backy.conf",
  );
  assert.equal(c.completedCallback, "/etc/backy/hooks/done.sh"); // relative to the config
  assert.equal(c.failedCallback, "page-oncall"); // a bare name is looked up in PATH
  assert.equal(c.callbackTimeout, 120);
  assert.equal(c.backupTimeout, 43200);
  assert.equal(c.criticalFailures, 5);
  assert.equal(c.monitoringGroup, "nagios");
  assert.equal(c.http, undefined); // off unless configured
  assert.equal(parseSchedulerConfig(globals("monitoring-group: 998"), "c").monitoringGroup, "998");
  assert.equal(
    errorOf(globals("critical-failures: 0")),
    "backy.conf:2: global.critical-failures: expected a positive integer, got integer 0",
  );
  assert.equal(
    errorOf(globals("backup-timeout: soon")),
    'backy.conf:2: global.backup-timeout: invalid duration "soon" (expected a positive integer with optional unit w, d, h, m or s)',
  );
  assert.equal(
    errorOf(globals("monitoring-group: a:b")),
    'backy.conf:2: global.monitoring-group: invalid group name "a:b"',
  );
});

Deno.test("http: off without http-port, loopback by default, tokens by client name", () => {
  assert.equal(
    errorOf(globals("http-addrs: 127.0.0.1")),
    "backy.conf:2: global.http-addrs: needs http-port (the HTTP endpoint is off without it)",
  );
  const c = parseSchedulerConfig(
    globals("http-port: 6080", "http-tokens:", "  nagios: abcdefghijklmnop0123"),
    "/etc/backy.conf",
  );
  assert.deepEqual(plain(c.http), {
    port: 6080,
    addrs: ["::1", "127.0.0.1"],
    tokens: { nagios: "abcdefghijklmnop0123" },
  });
  const tls = parseSchedulerConfig(
    globals(
      "http-port: 6080",
      "http-addrs: 192.0.2.10",
      "http-tokens: {prometheus: abcdefghijklmnop0123}",
      "http-tls-cert: tls/cert.pem",
      "http-tls-key: /etc/backy/tls/key.pem",
    ),
    "/etc/backy/backy.conf",
  );
  assert.equal(tls.http?.tlsCert, "/etc/backy/tls/cert.pem");
  assert.equal(tls.http?.tlsKey, "/etc/backy/tls/key.pem");
});

Deno.test("http: non-loopback needs TLS and tokens; token errors never show the token", () => {
  const token = "http-tokens: {nagios: abcdefghijklmnop0123}";
  assert.equal(
    errorOf(globals("http-port: 6080", "http-addrs: 0.0.0.0", token)),
    "backy.conf:3: global.http-addrs: non-loopback address 0.0.0.0 needs http-tokens and http-tls-cert/http-tls-key",
  );
  assert.equal(
    errorOf(globals(
      "http-port: 6080",
      'http-addrs: "::"',
      "http-tls-cert: c.pem",
      "http-tls-key: k.pem",
    )),
    "backy.conf:3: global.http-addrs: non-loopback address :: needs http-tokens and http-tls-cert/http-tls-key",
  );
  assert.equal(
    errorOf(globals("http-port: 6080", "http-addrs: backup.example.com")),
    'backy.conf:3: global.http-addrs: not an IP address: "backup.example.com" (host names are not accepted)',
  );
  assert.equal(
    errorOf(globals("http-port: 6080", "http-tls-cert: c.pem")),
    "backy.conf:3: global.http-tls-cert: http-tls-cert and http-tls-key go together",
  );
  // Tokens: all digits (YAML reads a number), too short, reused. The message names the
  // client, never the token.
  for (
    const [value, problem] of [
      ["12345678901234567890", "the token must be a string (quote it)"],
      ["short-secret", "the token must be at least 16 characters without whitespace"],
    ]
  ) {
    const msg = errorOf(globals("http-port: 6080", "http-tokens:", `  nagios: ${value}`));
    assert.equal(msg, `backy.conf:4: global.http-tokens.nagios: ${problem}`);
    assert.ok(!msg.includes(value));
  }
  const reused = errorOf(globals(
    "http-port: 6080",
    "http-tokens:",
    "  a: abcdefghijklmnop0123",
    "  b: abcdefghijklmnop0123",
  ));
  assert.equal(reused, 'backy.conf:5: global.http-tokens.b: same token as client "a"');
});

Deno.test("scrub keys: verify-every (a duration or off) and verify-budget (a size)", () => {
  const base = ["global:", "  base-dir: /srv"];
  const tail = ["schedules:", "  s: {daily: {interval: 1d, keep: 1}}", "jobs: {}"];
  const parse = (...lines: string[]) =>
    parseSchedulerConfig([...base, ...lines, ...tail].join("\n"), "backy.conf");
  assert.equal(parse().verifyEvery, 30 * 86400);
  assert.equal(parse().verifyBudget, undefined);
  assert.equal(parse("  verify-every: 2w").verifyEvery, 14 * 86400);
  assert.equal(parse("  verify-every: off").verifyEvery, 0);
  assert.equal(parse("  verify-budget: 50G").verifyBudget, 50 * 1024 ** 3);
  assert.equal(parse("  verify-budget: 1048576").verifyBudget, 1048576);
  assert.throws(
    () => parse("  verify-budget: lots"),
    /backy.conf:3: global.verify-budget: expected a size such as 50G/,
  );
  assert.throws(
    () => parse("  verify-every: soon"),
    /backy.conf:3: global.verify-every: invalid duration/,
  );
});
