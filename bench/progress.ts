/**
 * Cost of progress reporting (issue 12): `advance()` per call (the data path calls it once
 * per 4 MiB block), and the whole report for a 4 GiB run (1,024 blocks) with `.progress`
 * written, log lines off the terminal. `deno run --allow-all bench/progress.ts`
 */
import { setupLogging, stopLogging } from "../src/util/log.ts";
import { startProgress } from "../src/util/progress.ts";

const MiB = 1024 * 1024;
const dir = await Deno.makeTempDir({ prefix: "backy-bench-progress-" });
setupLogging({ verbose: false, console: "stderr" });
try {
  // 1. advance(): best of 5 rounds of 10 million calls.
  const p = startProgress({ command: "backup", phase: "copying", total: 1e15, jobDir: dir });
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    const n = 10_000_000;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) p.advance(4 * MiB);
    best = Math.min(best, ((performance.now() - t0) * 1e6) / n);
  }
  p.finish();
  console.log(`advance(): ${best.toFixed(2)} ns per call (best of 5 x 10M)`);

  // 2. A 4 GiB run paced like a 1 GB/s backup (1,024 blocks, 8 per 33 ms), with and
  // without a progress report, CPU time from /proc/self/stat (10 ms resolution).
  const cpuMs = () => {
    const r = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return (Number(r[11]) + Number(r[12])) * 10;
  };
  const paced = async (advance: (n: number) => void) => {
    const c0 = cpuMs();
    for (let i = 0; i < 1024; i++) {
      advance(4 * MiB);
      if (i % 8 === 7) await new Promise((r) => setTimeout(r, 33));
    }
    return cpuMs() - c0;
  };
  let sum = 0;
  const without = await paced((n) => (sum += n));
  const q = startProgress({ command: "backup", phase: "copying", total: 4096 * MiB, jobDir: dir });
  const withProgress = await paced((n) => q.advance(n));
  q.finish();
  console.log(
    `4 GiB paced over ~4.3 s: ${withProgress} ms CPU with progress (.progress every 2 s), ` +
      `${without} ms without (${sum / MiB} MiB counted)`,
  );
} finally {
  stopLogging();
  await Deno.remove(dir, { recursive: true });
}
