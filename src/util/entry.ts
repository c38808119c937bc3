/**
 * How backy finds its own code at run time, the same way from a source checkout, from the
 * bundled artifact (`deno task dist`: one JavaScript file) and from a compiled binary:
 *
 * - the data-path Worker is started under a marker name on the URL of a module that,
 *   loaded under that name, imports the Worker code (backup/worker_entry.ts). A bundle has
 *   no `./worker.ts` beside it, but it always contains that module, so one file serves as
 *   both the program and its Worker. The artifact also carries the Worker's own bundle
 *   (68 KiB instead of 1.2 MiB to load per Worker) in a global, and starts Workers from that.
 * - the scheduler runs backy itself (`selfCommand()`): the compiled binary, `deno run` on
 *   the bundle, or `deno run` on mod.ts of the checkout, always with backy's permissions
 *   and V8 flags.
 */

/** `name` given to data-path Workers; a module loaded under this name runs the Worker code. */
export const WORKER_NAME = "backy-data-worker";

/** Global in which the artifact carries the Worker's own bundle (dist.ts sets it first). */
export const WORKER_BUNDLE_GLOBAL = "__backyWorkerBundle";

/** The Worker's own bundle, when this backy runs as the artifact and carries one. */
export function embeddedWorkerBundle(): string | undefined {
  if (runMode() !== "bundle") return undefined;
  const code = (globalThis as Record<string, unknown>)[WORKER_BUNDLE_GLOBAL];
  return typeof code === "string" ? code : undefined;
}

/** Whether this thread is a data-path Worker: mod.ts must then not run the CLI. */
export function inDataWorker(): boolean {
  return (globalThis as { name?: unknown }).name === WORKER_NAME;
}

/**
 * Deno's permissions for backy (design D15; why: docs/permissions.md). Deno 2.9 refuses every
 * path under /dev, /proc and /sys unless it runs with --allow-all, whatever --allow-read and
 * --allow-write say: block devices (LVM sources, restore targets) and /proc (who holds a lock,
 * whether a process lives) are backy's everyday work. Shared by the bundle's `#!` line,
 * `deno compile` (compile.sh) and `selfCommand()`.
 */
export const PERMISSIONS: readonly string[] = ["--allow-all"];

/**
 * V8 flags for backy: the main thread's young generation at 1 MiB per semi-space instead of
 * up to 16. Its garbage is small objects; the data itself lives in ArrayBuffers outside the
 * young generation. Peak RSS of a 1 GiB chunked backup 148 -> 140 MiB, restore 142 -> 134
 * MiB, same times (A/B, 3 rounds). Only a command-line flag works: Workers started after a
 * runtime setFlagsFromString showed no difference.
 */
export const V8_FLAGS: readonly string[] = ["--v8-flags=--max-semi-space-size=1"];

/**
 * `deno run` flags for the bundle: backy's permissions and V8 flags, and nothing resolved
 * from a config file, a lock file, the npm registry or remote URLs (the bundle contains all).
 */
export const RUN_FLAGS: readonly string[] = [
  "--no-config",
  "--no-lock",
  "--no-remote",
  "--no-npm",
  "--quiet",
  ...PERMISSIONS,
  ...V8_FLAGS,
];

/** How this backy runs: from a source checkout, as the bundle, or compiled. */
export type RunMode = "source" | "bundle" | "binary";

/** This module's URL in a checkout ends like this; in a bundle it is the bundle's URL. */
const SOURCE_SUFFIX = "/src/util/entry.ts";

/** How this backy runs (pure function of the two facts that decide it). */
export function runModeOf(moduleUrl: string, standalone: boolean): RunMode {
  if (standalone) return "binary";
  return moduleUrl.endsWith(SOURCE_SUFFIX) ? "source" : "bundle";
}

/** How this backy runs. */
export function runMode(): RunMode {
  return runModeOf(import.meta.url, Deno.build.standalone);
}

/** The file `deno run` starts for this backy: mod.ts of the checkout, or the bundle. */
export function selfScript(): string {
  const url = runMode() === "source" ? new URL("../../mod.ts", import.meta.url) : import.meta.url;
  return decodeURIComponent(new URL(url).pathname);
}

/**
 * How to run backy itself as a child process (the scheduler runs the ordinary commands):
 * `BACKY_CMD` if set, the compiled binary itself, or `deno run` with backy's permissions
 * on the bundle or on mod.ts of the checkout (which needs its deno.json, found from
 * mod.ts's directory).
 */
export function selfCommand(): string[] {
  const override = Deno.env.get("BACKY_CMD");
  if (override) return [override];
  switch (runMode()) {
    case "binary":
      return [Deno.execPath()];
    case "bundle":
      return [Deno.execPath(), "run", ...RUN_FLAGS, selfScript()];
    case "source":
      return [Deno.execPath(), "run", "--quiet", ...PERMISSIONS, ...V8_FLAGS, selfScript()];
  }
}
