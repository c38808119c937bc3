import { deepStrictEqual as assertEquals, match as assertMatch } from "node:assert/strict";
import { join } from "node:path";
import { logger, ReopeningFile, setupLogging, stopLogging } from "../../src/util/log.ts";

Deno.test("log file is reopened after rotation (rename) and after deletion", async () => {
  const dir = await Deno.makeTempDir({ prefix: "backy-log-" });
  try {
    const path = join(dir, "backy.log");
    const f = new ReopeningFile(path);
    f.write("one\n");
    await Deno.rename(path, `${path}.1`); // logrotate without copytruncate
    f.write("two\n");
    await Deno.remove(path);
    f.write("three\n");
    f.close();
    assertEquals(await Deno.readTextFile(`${path}.1`), "one\n");
    assertEquals(await Deno.readTextFile(path), "three\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("file log lines: date, pid, level, message, key=value", async () => {
  const dir = await Deno.makeTempDir({ prefix: "backy-log-" });
  try {
    const path = join(dir, "backy.log");
    setupLogging({ verbose: false, logfile: path, console: "stderr" });
    logger("test").info("Backup complete", { id: "abc", note: "two words" });
    logger("test").debug("not shown without -v");
    stopLogging();
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
    assertEquals(lines.length, 1);
    assertMatch(
      lines[0],
      new RegExp(
        `^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d \\[${Deno.pid}\\] INFO Backup complete id=abc note="two words"$`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JSON lines: time, level, pid, logger, message, fields; text lines on the console", async () => {
  const dir = await Deno.makeTempDir({ prefix: "backy-log-" });
  try {
    const path = join(dir, "backy.log");
    setupLogging({ verbose: false, logfile: path, console: "stderr", format: "json" });
    logger("scheduler").error("vm1: exit status 1: source gone", {
      job: "vm1",
      failures: 2,
      message: "clash",
      when: new Date(0),
    });
    stopLogging();
    const line = JSON.parse((await Deno.readTextFile(path)).trim());
    assertMatch(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    delete line.time;
    assertEquals(line, {
      level: "ERROR",
      pid: Deno.pid,
      logger: "scheduler",
      message: "vm1: exit status 1: source gone",
      job: "vm1",
      failures: 2,
      _message: "clash",
      when: "1970-01-01T00:00:00.000Z",
    });
    // New log files are the owner's only; a looser existing one is tightened.
    assertEquals((await Deno.stat(path)).mode! & 0o777, 0o600);
    const loose = join(dir, "loose.log");
    await Deno.writeTextFile(loose, "old\n", { mode: 0o644 });
    await Deno.chmod(loose, 0o644);
    const f = new ReopeningFile(loose, 0o640);
    f.write("new\n");
    f.close();
    assertEquals((await Deno.stat(loose)).mode! & 0o777, 0o640);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
