/**
 * How to run backy itself as a child process (the scheduler runs the ordinary commands):
 * `BACKY_CMD` if set, the compiled binary itself, or `deno run` on this source tree.
 */
export function selfCommand(): string[] {
  const override = Deno.env.get("BACKY_CMD");
  if (override) return [override];
  const exe = Deno.execPath();
  const base = exe.slice(exe.lastIndexOf("/") + 1);
  if (base === "deno" || base.startsWith("deno-")) {
    const mod = new URL("../../mod.ts", import.meta.url).pathname;
    return [exe, "run", "--allow-all", "--quiet", mod];
  }
  return [exe];
}
