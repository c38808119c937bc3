/** Running external programs (cp, rbd, qemu-img) with argv arrays, never a shell. */
import { BackyError, errorMessage } from "./errors.ts";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string> } = {},
): Promise<RunResult> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: opts.env,
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new BackyError(`cannot run ${cmd}: command not found`, { cause: e });
    }
    throw new BackyError(`cannot run ${cmd}: ${errorMessage(e)}`, { cause: e });
  }
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** First non-empty line of a command's stderr, for one-line error messages. */
export function firstLine(text: string): string {
  return text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? "";
}
