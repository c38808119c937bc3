import assert from "node:assert/strict";
import { globMatch, isGlob, nameFilter } from "../../src/util/glob.ts";

Deno.test("globMatch: *, ?, sets, ranges, negation, escapes, whole-name", () => {
  const cases: [string, string, boolean][] = [
    ["*", "", true],
    ["*", "vm1", true],
    ["vm*", "vm1", true],
    ["vm*", "xvm1", false],
    ["*1", "vm1", true],
    ["v?1", "vm1", true],
    ["v?1", "v1", false],
    ["[a-c]x", "bx", true],
    ["[a-c]x", "dx", false],
    ["[!a-c]x", "dx", true],
    ["[^a-c]x", "ax", false],
    ["[]]", "]", true],
    ["a\\*", "a*", true],
    ["a\\*", "ab", false],
    ["[", "[", true], // no closing bracket: a literal
    ["*a*b*c", "xxaxxbxxc", true],
    ["*a*b*c", "xxaxxcxxb", false],
    ["日*", "日本", true],
    ["?", "日", true],
    ["**x", "abx", true],
  ];
  for (const [p, s, want] of cases) assert.equal(globMatch(p, s), want, `${p} ${s}`);
});

Deno.test("nameFilter: substring without glob characters; length limit", () => {
  assert.equal(isGlob("web"), false);
  assert.equal(isGlob("web*"), true);
  const f = nameFilter("eb0");
  assert.deepEqual(["web01", "db", "eb0"].filter(f), ["web01", "eb0"]);
  assert.throws(() => nameFilter("x".repeat(257)), /pattern too long/);
});

Deno.test("nameFilter: pathological patterns take linear-ish time", () => {
  const name = "a".repeat(255);
  for (const p of [`*${"a*".repeat(127)}b`, `${"?".repeat(250)}*b`]) {
    const f = nameFilter(p);
    const t = performance.now();
    for (let i = 0; i < 200; i++) assert.equal(f(name), false);
    const ms = performance.now() - t;
    assert.ok(ms < 1000, `${p.slice(0, 20)}...: ${ms.toFixed(0)} ms for 200 names`);
  }
});
