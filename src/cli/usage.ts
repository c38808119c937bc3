/**
 * Usage errors (a command line that cannot be right, found before anything is touched):
 * exit 2 like argparse and most Unix tools, except `check`, whose every failure is a Nagios
 * UNKNOWN (3). Runtime failures stay exit 1 (design D8). Also the hint for global options
 * given after the command (`backy status -b DIR`), which argparse-era users type.
 */
import { BackyError } from "../util/errors.ts";

/** Exit status of a usage error. */
export const USAGE_EXIT = 2;
/** Exit status of a usage error of `check` (Nagios UNKNOWN). */
export const CHECK_USAGE_EXIT = 3;

/** A bad command line found by backy's own validation (commander finds the rest). */
export class UsageError extends BackyError {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The global options and whether each takes a value (they go before the command). */
export const GLOBAL_OPTIONS: Readonly<Record<string, boolean>> = {
  "-v": false,
  "--verbose": false,
  "-l": true,
  "--logfile": true,
  "-b": true,
  "--backupdir": true,
};

/** Quotes one word for a POSIX shell where needed. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * For `unknown option 'FLAG'` where FLAG is a global option given after the command: the
 * same command line with the global options moved in front, e.g. `backy status -b DIR` →
 * `backy -b DIR status`. Undefined when FLAG is not a global option or argv has no command.
 */
export function globalOptionHint(argv: readonly string[], flag: string): string | undefined {
  const name = flag.split("=")[0];
  if (!(name in GLOBAL_OPTIONS)) return undefined;
  const front: string[] = [];
  let i = 0;
  // The global options already in front, then the command.
  while (i < argv.length && argv[i].startsWith("-") && argv[i] !== "--") {
    const takesValue = GLOBAL_OPTIONS[argv[i]] === true;
    front.push(argv[i++]);
    if (takesValue && i < argv.length) front.push(argv[i++]);
  }
  if (i >= argv.length) return undefined;
  const rest: string[] = [argv[i++]];
  const moved: string[] = [];
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      rest.push(...argv.slice(i));
      break;
    }
    const n = a.split("=")[0];
    if (n in GLOBAL_OPTIONS) {
      moved.push(a);
      if (GLOBAL_OPTIONS[n] && !a.includes("=") && i + 1 < argv.length) moved.push(argv[++i]);
    } else {
      rest.push(a);
    }
  }
  if (moved.length === 0) return undefined;
  const line = ["backy", ...front, ...moved, ...rest].map(shellQuote).join(" ");
  return `hint: global options go before the command: ${line}`;
}

/** The flag named by commander's `error: unknown option 'FLAG'` message, if it is one. */
export function unknownOptionFlag(message: string): string | undefined {
  return /unknown option '([^']+)'/.exec(message)?.[1];
}
