/**
 * Logging (design D13, spec 1.6): with `-l FILE` lines go to FILE, which is reopened when
 * it was rotated (renamed or deleted); otherwise message text goes to stdout — or stderr
 * when stdout carries data (`restore ... -`). Line format in files:
 * `YYYY-MM-DD HH:MM:SS [pid] LEVEL message key=value`. The scheduler writes that full line
 * to the console too (a journal must tell errors apart), and can write JSON lines instead.
 * Log files are created readable by the owner only (D18), optionally by a group too.
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

/**
 * Appends to a file, reopening it whenever the path no longer names the open inode. New
 * files get `mode`; an existing file of ours with looser permissions is tightened to it.
 */
export class ReopeningFile {
  private file?: Deno.FsFile;
  private ino?: number | null;
  private enc = new TextEncoder();

  constructor(readonly path: string, private mode = 0o600, private gid?: number) {}

  /** New permissions (config reload): applied now and to every reopened file. */
  setPermissions(mode: number, gid?: number): void {
    this.mode = mode;
    this.gid = gid;
    if (this.file) this.protect(this.file.statSync());
  }

  /** Best effort: a file we cannot chmod (someone else's) keeps its mode. */
  private protect(info: Deno.FileInfo): void {
    try {
      const perm = (info.mode ?? 0) & 0o777;
      if (perm !== this.mode) Deno.chmodSync(this.path, this.mode);
      if (this.gid !== undefined && info.gid !== this.gid) {
        Deno.chownSync(this.path, null, this.gid);
      }
    } catch {
      // not ours to change
    }
  }

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
      this.file = Deno.openSync(this.path, { append: true, create: true, mode: this.mode });
      const info = this.file.statSync();
      this.ino = info.ino;
      this.protect(info);
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

function jsonValue(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Error) return v.message;
  if (v === undefined || typeof v === "function" || typeof v === "symbol") return null;
  if (typeof v === "bigint") return String(v);
  return v;
}

const JSON_RESERVED = new Set(["time", "level", "pid", "logger", "message"]);

/**
 * One JSON object per line for log shippers: time (ISO 8601), level, pid, logger, message,
 * then the record's fields (a field named like one of those gets a leading underscore).
 */
export function jsonLine(record: LogRecord, pid = Deno.pid): string {
  let text = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    text += i % 2 === 0 ? String(part) : renderValue(part);
  }
  const out: Record<string, unknown> = {
    time: new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level] ?? record.level.toUpperCase(),
    pid,
    logger: record.category.slice(1).join(".") || record.category.join("."),
    message: text,
  };
  for (const [k, v] of Object.entries(record.properties)) {
    if (String(record.rawMessage).includes(`{${k}}`)) continue;
    out[JSON_RESERVED.has(k) || Object.hasOwn(out, k) ? `_${k}` : k] = jsonValue(v);
  }
  return JSON.stringify(out);
}

/** `YYYY-MM-DD HH:MM:SS [pid] LEVEL message key=value`. */
export function textLine(record: LogRecord, pid = Deno.pid): string {
  const level = LEVEL_NAMES[record.level] ?? record.level.toUpperCase();
  const when = formatDateTime(new Date(record.timestamp));
  return `${when} [${pid}] ${level} ${renderMessage(record)}`;
}

export interface LogSetup {
  verbose: boolean;
  logfile?: string;
  /** Where console records go when there is no log file. */
  console: "stdout" | "stderr";
  /**
   * `message`: console lines are the message only (2.1's one-shot commands); `text`: the
   * full line with time and level, as in files; `json`: JSON lines, console and file.
   */
  format?: "message" | "text" | "json";
}

let fileSink: ReopeningFile | undefined;
let consoleHook: (() => void) | undefined;

/** Registers what runs before a log line goes to the console (progress clears its line). */
export function onConsoleWrite(hook: (() => void) | undefined): void {
  consoleHook = hook;
}

/** Permissions of the log file from now on (the scheduler's `monitoring-group`). */
export function setLogFilePermissions(mode: number, gid?: number): void {
  fileSink?.setPermissions(mode, gid);
}

export function setupLogging(setup: LogSetup): void {
  fileSink?.close();
  fileSink = setup.logfile ? new ReopeningFile(setup.logfile) : undefined;
  const enc = new TextEncoder();
  const out = setup.console === "stdout" ? Deno.stdout : Deno.stderr;
  const format = setup.format ?? "message";
  const sink = (record: LogRecord) => {
    const line = format === "json" ? jsonLine(record) : textLine(record);
    if (fileSink) {
      fileSink.write(`${line}\n`);
    } else {
      consoleHook?.();
      const bytes = enc.encode(`${format === "message" ? renderMessage(record) : line}\n`);
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
