/** Pure helpers of usage errors: the corrected command line for misplaced global options. */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { globalOptionHint, shellQuote, unknownOptionFlag } from "../../src/cli/usage.ts";

const H = "hint: global options go before the command: ";

Deno.test("globalOptionHint moves global options (and their values) before the command", () => {
  const cases: [string[], string, string | undefined][] = [
    [["status", "-b", "/srv/x"], "-b", `${H}backy -b /srv/x status`],
    [["status", "--backupdir=/srv/x"], "--backupdir=/srv/x", `${H}backy --backupdir=/srv/x status`],
    [["-v", "backup", "daily", "-l", "/l"], "-l", `${H}backy -v -l /l backup daily`],
    [["-b", "/a", "restore", "-r", "1", "-v", "out"], "-v", `${H}backy -b /a -v restore -r 1 out`],
    [["find", "-b", "a b"], "-b", `${H}backy -b 'a b' find`],
    // After `--` everything is an argument, kept as it is.
    [["restore", "-v", "--", "-b"], "-v", `${H}backy -v restore -- -b`],
    // Not a global option, or no command: no hint.
    [["status", "-x"], "-x", undefined],
    [["-b"], "-b", undefined],
  ];
  for (const [argv, flag, hint] of cases) assertEquals(globalOptionHint(argv, flag), hint);
});

Deno.test("shellQuote and unknownOptionFlag", () => {
  assertEquals(shellQuote("/srv/backy/vm-1.img"), "/srv/backy/vm-1.img");
  assertEquals(shellQuote("a b"), "'a b'");
  assertEquals(shellQuote("it's"), `'it'\\''s'`);
  assertEquals(shellQuote(""), "''");
  assertEquals(unknownOptionFlag("error: unknown option '-b'"), "-b");
  assertEquals(unknownOptionFlag("error: unknown option '--x=1'\n(Did you mean --y?)"), "--x=1");
  assertEquals(unknownOptionFlag("error: unknown command 'x'"), undefined);
});
