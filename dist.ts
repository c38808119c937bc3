/**
 * `deno task dist`: builds the offline artifact `dist/backy.js`, one JavaScript file with
 * every dependency inside, executable through its `#!` line. It runs with only the pinned
 * `deno` binary: no network, no npm cache, an empty DENO_DIR (`deno bundle` works offline
 * once its own bundler is cached; `deno compile` cannot download its runtime here).
 *
 * `--compile` then makes the single binary `dist/backy` from that same file with backy's
 * permissions (compile.sh); it fails with a clear message where Deno's runtime download is
 * unreachable. Prints what it built.
 */
import { join } from "node:path";
import { PERMISSIONS, RUN_FLAGS, V8_FLAGS, WORKER_BUNDLE_GLOBAL } from "./src/util/entry.ts";

const root = new URL(".", import.meta.url).pathname;
// `--out DIR` (tests build into a temporary directory); default dist/.
const outArg = Deno.args.indexOf("--out");
const out = outArg >= 0 ? Deno.args[outArg + 1] : join(root, "dist");
const bundle = join(out, "backy.js");
const binary = join(out, "backy");
const deno = Deno.execPath();

async function run(args: string[]): Promise<{ ok: boolean; err: string }> {
  const r = await new Deno.Command(deno, { args, cwd: root, stdout: "inherit", stderr: "piped" })
    .output();
  return { ok: r.success, err: new TextDecoder().decode(r.stderr) };
}

/** The line of deno's error output that names the cause (it ends with a backtrace). */
function reason(err: string): string {
  const lines = err.split("\n").map((l) => l.trim());
  return lines.find((l) => /error sending request/.test(l)) ?? lines.find((l) => l) ?? "";
}

/** Bundles one entry module into `output`, or exits with deno's message. */
async function bundleModule(entry: string, output: string): Promise<string> {
  const b = await run(["bundle", "--quiet", "--platform", "deno", "--output", output, entry]);
  if (!b.ok) {
    console.error(`dist: deno bundle ${entry} failed:\n${b.err}`);
    Deno.exit(1);
  }
  const code = await Deno.readTextFile(output);
  await Deno.remove(output);
  return code;
}

await Deno.mkdir(out, { recursive: true });
const tmp = `${bundle}.tmp`;
// The data-path Worker's own bundle, carried inside the artifact (src/util/entry.ts).
const workerCode = await bundleModule("src/backup/worker.ts", tmp);
const code = await bundleModule("mod.ts", tmp);
// `env -S` splits the flags (coreutils 8.30+); `deno run dist/backy.js` works as well.
const shebang = `#!/usr/bin/env -S deno run ${RUN_FLAGS.join(" ")}\n`;
// npm packages shipped as CommonJS (yaml) require() Node's built-ins; the bundler keeps those
// calls, which need a `require` in scope (declared first: the bundler's shim tests for it).
const prelude = 'import { createRequire as __backyRequire } from "node:module";\n' +
  "const require = __backyRequire(import.meta.url);\n" +
  `globalThis.${WORKER_BUNDLE_GLOBAL} = ${JSON.stringify(workerCode.replace(/^#!.*\n/, ""))};\n`;
await Deno.writeTextFile(tmp, shebang + prelude + code.replace(/^#!.*\n/, ""));
await Deno.chmod(tmp, 0o755);
await Deno.rename(tmp, bundle);
console.log(`built ${bundle} (${Math.round((await Deno.stat(bundle)).size / 1024)} KiB)`);

if (Deno.args.includes("--compile")) {
  const c = await run([
    "compile",
    "--quiet",
    "--no-config",
    "--no-lock",
    ...PERMISSIONS,
    ...V8_FLAGS,
    "--output",
    binary,
    bundle,
  ]);
  if (!c.ok) {
    if (/denort|download|dl\.deno\.land|error sending request|dns|connect/i.test(c.err)) {
      console.error(
        "compile: deno compile could not download Deno's runtime (denort) from Deno's " +
          "server, which is unreachable from this machine; no binary was built.\n" +
          `Use the offline artifact instead: ${bundle} (runs with the deno binary alone).\n` +
          `deno said: ${reason(c.err)}`,
      );
    } else {
      console.error(`compile: deno compile failed:\n${c.err}`);
    }
    Deno.exit(1);
  }
  console.log(`built ${binary}`);
}
