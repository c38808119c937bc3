/** Revision specs (design D6, spec 1.3): exact resolution order and messages. */
import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import { resolveSpec, SpecNotFound } from "../../src/repo/spec.ts";
import type { Revision } from "../../src/repo/revision.ts";
import { BackyError } from "../../src/util/errors.ts";

function rev(id: string, hour: number, tags: string[] = [], complete = true): Revision {
  return {
    id,
    timestampUs: Date.UTC(2016, 0, 1, hour) * 1000,
    parent: null,
    stats: complete ? { bytes_written: 0, duration: 1 } : { bytes_written: 0 },
    tags,
    backend: "cow",
    trust: "trusted",
    extra: {},
  };
}

// Oldest first, as JobDir.scan returns them. The newest one (index 4) is incomplete.
const history = [
  rev("abc1", 1, ["daily", "weekly"]),
  rev("abd2", 2, ["daily"]),
  rev("5", 3, ["hourly"]),
  rev("xyz", 4, ["daily", "monthly"]),
  rev("abe9", 5, ["daily", "broken"], false),
];

const id = (spec: string) => resolveSpec(history, spec, "/job").id;

function notFound(spec: string, h = history) {
  assertThrows(() => resolveSpec(h, spec, "/job"), (e: unknown) => {
    assertEquals(e instanceof SpecNotFound, true);
    assertEquals((e as Error).message, `Cannot find revision in /job: '${spec}'`);
    return true;
  });
}

Deno.test("numbers count all revisions, newest first, incomplete included", () => {
  assertEquals(id("0"), "abe9");
  assertEquals(id("1"), "xyz");
  assertEquals(id("4"), "abc1");
  assertEquals(id("+1"), "xyz");
});

Deno.test("negative numbers are not found at once; too large ones fall through", () => {
  notFound("-1");
  notFound("-0x"); // not a number either: no ID, tag or prefix matches
  notFound("7");
  // "5" >= the history length (5): it falls through to the exact ID "5".
  assertEquals(id("5"), "5");
  // A number within range shadows a revision whose ID looks like that number.
  const h = [rev("1", 1), rev("y", 2), rev("z", 3)];
  assertEquals(resolveSpec(h, "1", "/job").id, "y");
});

Deno.test("exact ID, then last/latest = newest complete", () => {
  assertEquals(id("abd2"), "abd2");
  assertEquals(id("abe9"), "abe9", "an exact ID reaches incomplete revisions too");
  assertEquals(id("last"), "xyz");
  assertEquals(id("latest"), "xyz");
  notFound("last", [rev("a", 1, [], false)]);
});

Deno.test("tags select the newest complete revision carrying them", () => {
  assertEquals(id("daily"), "xyz");
  assertEquals(id("weekly"), "abc1");
  assertEquals(id("hourly"), "5");
  notFound("broken"); // only on the incomplete revision
  notFound("yearly");
});

Deno.test("unique ID prefixes resolve; ambiguous ones name the candidates", () => {
  assertEquals(id("abd"), "abd2");
  assertEquals(id("xy"), "xyz");
  assertEquals(id("abe"), "abe9", "prefixes reach incomplete revisions");
  assertThrows(() => resolveSpec(history, "ab", "/job"), (e: unknown) => {
    assertEquals(e instanceof BackyError, true);
    assertEquals(e instanceof SpecNotFound, false);
    assertEquals(
      (e as Error).message,
      "Ambiguous revision 'ab' in /job: matches abc1, abd2, abe9",
    );
    return true;
  });
});

Deno.test("tags shadow prefixes, exact IDs shadow tags", () => {
  const h = [rev("daily-old", 1), rev("dai", 2), rev("other", 3, ["dai", "daily"])];
  assertEquals(resolveSpec(h, "dai", "/j").id, "dai", "exact ID before tag");
  assertEquals(resolveSpec(h, "daily", "/j").id, "other", "tag before prefix");
  assertEquals(resolveSpec(h, "daily-", "/j").id, "daily-old", "prefix last");
});

Deno.test("empty spec and empty history are not found", () => {
  notFound("");
  notFound("0", []);
  notFound("last", []);
});
