/**
 * Ctrl-C or SIGTERM of a foreground command: one line saying what was interrupted, the
 * same in the log file, and the exit status a shell reports for the signal (130 / 143),
 * instead of a silent death. Nothing else is cleaned up here: an interrupted backup leaves
 * an incomplete revision that the next backup removes, as after any crash (spec 2.6).
 */
import { printErr } from "./output.ts";
import { logger, stopLogging } from "../util/log.ts";
import { finishAllProgress } from "../util/progress.ts";

/** The signals handled, with the exit status each leads to (128 + signal number). */
export const INTERRUPT_EXIT: Readonly<Record<"SIGINT" | "SIGTERM", number>> = {
  SIGINT: 130,
  SIGTERM: 143,
};

/** `Interrupted: backup of /srv/backy/vm1 stopped by SIGINT`. */
export function interruptMessage(what: string, signal: string): string {
  return `Interrupted: ${what} stopped by ${signal}`;
}

/**
 * Until the returned function is called, SIGINT/SIGTERM end the process with that line on
 * stderr (and in the log file when `toLogFile`).
 */
export function watchInterrupts(what: string, toLogFile: boolean): () => void {
  const handlers = Object.entries(INTERRUPT_EXIT).map(([signal, code]) => {
    const handler = () => {
      finishAllProgress();
      printErr(interruptMessage(what, signal));
      if (toLogFile) {
        const log = logger();
        log.error(interruptMessage(what, signal));
        log.error("Backy operation failed.");
      }
      stopLogging();
      Deno.exit(code);
    };
    Deno.addSignalListener(signal as Deno.Signal, handler);
    return [signal as Deno.Signal, handler] as const;
  });
  return () => {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
  };
}
