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
