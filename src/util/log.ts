/**
 * Logging (design D13, spec 1.6): with `-l FILE` lines go to FILE, which is reopened when
 * it was rotated (renamed or deleted); otherwise message text goes to stdout — or stderr
 * when stdout carries data (`restore ... -`). Line format in files:
 * `YYYY-MM-DD HH:MM:SS [pid] LEVEL message key=value`.
 */
import { configureSync, getLogger, type Logger, type LogRecord, resetSync } from "@logtape/logtape";
import { formatDateTime } from "./format.ts";

export type { Logger };

const LEVEL_NAMES: Record<string, string> = {
  trace: "DEBUG",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARNING",
  error: "ERROR",
  fatal: "CRITICAL",
};

function renderValue(v: unknown): string {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v instanceof Date) return v.toISOString();
  if (v === undefined) return "-";
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

function renderMessage(record: LogRecord): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    text += i % 2 === 0 ? String(part) : renderValue(part);
  }
  const props = Object.entries(record.properties)
    .filter(([k]) => !String(record.rawMessage).includes(`{${k}}`))
    .map(([k, v]) => `${k}=${renderValue(v)}`);
  return props.length ? `${text} ${props.join(" ")}` : text;
}

/** Appends to a file, reopening it whenever the path no longer names the open inode. */
export class ReopeningFile {
  private file?: Deno.FsFile;
  private ino?: number | null;
  private enc = new TextEncoder();

  constructor(readonly path: string) {}

  write(text: string): void {
    let current: Deno.FileInfo | undefined;
    try {
      current = Deno.statSync(this.path);
    } catch {
      current = undefined; // deleted or renamed away by logrotate
    }
    if (this.file && (!current || current.ino !== this.ino)) {
      this.file.close();
      this.file = undefined;
    }
    if (!this.file) {
      this.file = Deno.openSync(this.path, { append: true, create: true, mode: 0o644 });
      this.ino = this.file.statSync().ino;
    }
    const bytes = this.enc.encode(text);
    let off = 0;
    while (off < bytes.length) off += this.file.writeSync(bytes.subarray(off));
  }

  close(): void {
    this.file?.close();
    this.file = undefined;
  }
}

export interface LogSetup {
  verbose: boolean;
  logfile?: string;
  /** Where console records go when there is no log file. */
  console: "stdout" | "stderr";
}

let fileSink: ReopeningFile | undefined;
let consoleHook: (() => void) | undefined;

/** Registers what runs before a log line goes to the console (progress clears its line). */
export function onConsoleWrite(hook: (() => void) | undefined): void {
  consoleHook = hook;
}

export function setupLogging(setup: LogSetup): void {
  fileSink?.close();
  fileSink = setup.logfile ? new ReopeningFile(setup.logfile) : undefined;
  const enc = new TextEncoder();
  const out = setup.console === "stdout" ? Deno.stdout : Deno.stderr;
  const sink = (record: LogRecord) => {
    const msg = renderMessage(record);
    if (fileSink) {
      const level = LEVEL_NAMES[record.level] ?? record.level.toUpperCase();
      const when = formatDateTime(new Date(record.timestamp));
      fileSink.write(`${when} [${Deno.pid}] ${level} ${msg}\n`);
    } else {
      consoleHook?.();
      const bytes = enc.encode(msg + "\n");
      let off = 0;
      while (off < bytes.length) off += out.writeSync(bytes.subarray(off));
    }
  };
  configureSync({
    reset: true,
    sinks: { main: sink },
    loggers: [
      { category: ["backy"], lowestLevel: setup.verbose ? "debug" : "info", sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: ["main"] },
    ],
  });
}

export function stopLogging(): void {
  resetSync();
  fileSink?.close();
  fileSink = undefined;
}

export function logger(...sub: string[]): Logger {
  return getLogger(["backy", ...sub]);
}
