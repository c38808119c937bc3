/**
 * Errors meant for the user: main prints `Error: <message>` and exits 1, no stack trace.
 * Anything that is not a BackyError is a bug and gets its stack trace logged.
 */
export class BackyError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BackyError";
  }
}

/** A config file problem, located at file:line. */
export class ConfigError extends BackyError {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly detail: string,
  ) {
    super(`${file}${line !== undefined ? `:${line}` : ""}: ${detail}`);
    this.name = "ConfigError";
  }
}

/** Human text for an unknown thrown value (OS errors keep their own message). */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
