/**
 * Runs a progress report the way a backup does (for tests/util/progress_test.ts): copying
 * 64 MiB, then verifying 32 MiB, in 4 MiB blocks at a steady pace, with `.progress` in the
 * job directory given as the first argument. Prints `done` on stdout at the end.
 */
import { setupLogging, stopLogging } from "../../src/util/log.ts";
import { startProgress } from "../../src/util/progress.ts";

const MiB = 1024 * 1024;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jobDir = Deno.args[0];
const blockMs = Number(Deno.args[1] ?? "100");

setupLogging({ verbose: false, console: "stderr" });
const p = startProgress({ command: "backup", phase: "copying", total: 64 * MiB, jobDir });
for (let i = 0; i < 16; i++) {
  await delay(blockMs);
  p.advance(4 * MiB);
}
p.setPhase("verifying", 32 * MiB);
for (let i = 0; i < 8; i++) {
  await delay(blockMs);
  p.advance(4 * MiB);
}
p.finish();
stopLogging();
console.log("done");
