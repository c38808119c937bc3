/**
 * Black-box harness for the scheduler daemon: start the real `backy scheduler` as a child,
 * poll with deadlines, look at its process tree in /proc, talk to its telnet shell over TCP,
 * and read job directories the way an operator would.
 */
import { join } from "node:path";
import YAML from "yaml";
import { MOD } from "../helpers.ts";

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/**
 * Polls `fn` until it returns something truthy (returned) or the deadline passes (throws,
 * with the last error and `context()` for diagnosis). Exceptions inside `fn` count as "not
 * yet", so half-written files do not fail a test.
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: { timeoutMs?: number; intervalMs?: number; context?: () => Promise<string> } = {},
): Promise<T> {
  const started = Date.now();
  const deadline = started + (opts.timeoutMs ?? 10_000);
  let lastError: unknown;
  while (true) {
    try {
      const v = await fn();
      if (v) return v as T;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const ctx = opts.context ? `\n${await opts.context().catch((e) => String(e))}` : "";
      throw new Error(
        `timed out after ${Date.now() - started} ms waiting for ${what}` +
          (lastError ? ` (last error: ${lastError})` : "") + ctx,
      );
    }
    await delay(opts.intervalMs ?? 100);
  }
}

// ---------------------------------------------------------------------------------------
// Processes.

export interface ProcInfo {
  pid: number;
  ppid: number;
  state: string;
  args: string[];
}

function readProc(pid: number): ProcInfo | undefined {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const raw = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return {
      pid,
      state: rest[0],
      ppid: Number(rest[1]),
      args: raw.split("\0").filter((a) => a !== ""),
    };
  } catch {
    return undefined; // gone meanwhile
  }
}

export function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const p = readProc(Number(e.name));
    if (p) out.push(p);
  }
  return out;
}

/** Every live process below `pid` (children, grandchildren, ...). */
export function descendants(pid: number): ProcInfo[] {
  const all = processes();
  const found: ProcInfo[] = [];
  let frontier = [pid];
  while (frontier.length) {
    const next = all.filter((p) => frontier.includes(p.ppid) && p.state !== "Z");
    found.push(...next);
    frontier = next.map((p) => p.pid);
  }
  return found;
}

/** True while the process exists and is not a zombie. */
export function alive(pid: number): boolean {
  const p = readProc(pid);
  return p !== undefined && p.state !== "Z";
}

/** Processes whose command line mentions `text` (like `pgrep -f`, without matching us). */
export function processesMentioning(text: string): ProcInfo[] {
  return processes().filter((p) =>
    p.pid !== Deno.pid && p.state !== "Z" && p.args.some((a) => a.includes(text))
  );
}

// ---------------------------------------------------------------------------------------
// The daemon.

export class Daemon {
  readonly pid: number;
  exited = false;
  status?: Deno.CommandStatus;
  readonly done: Promise<Deno.CommandStatus>;
  private readonly outputs: Promise<[string, string]>;

  private constructor(
    private readonly child: Deno.ChildProcess,
    readonly config: string,
    readonly logFile: string | null,
  ) {
    this.pid = child.pid;
    const text = async (s: ReadableStream<Uint8Array>) => await new Response(s).text();
    this.outputs = Promise.all([text(child.stdout), text(child.stderr)]);
    this.done = child.status.then((s) => {
      this.exited = true;
      this.status = s;
      return s;
    });
  }

  /**
   * `deno run --allow-all mod.ts -l LOG scheduler -c CONFIG [ARGS]`; with `logFile` null,
   * no `-l` (log lines go to stdout).
   */
  static start(
    config: string,
    logFile: string | null,
    opts: { verbose?: boolean; args?: string[] } = {},
  ): Daemon {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--quiet",
        MOD,
        ...(opts.verbose ? ["-v"] : []),
        ...(logFile === null ? [] : ["-l", logFile]),
        "scheduler",
        "-c",
        config,
        ...(opts.args ?? []),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new Daemon(child, config, logFile);
  }

  async log(): Promise<string> {
    if (this.logFile === null) return "";
    try {
      return await Deno.readTextFile(this.logFile);
    } catch {
      return "";
    }
  }

  /** The daemon's log and anything it printed, for failure messages. */
  async diagnostics(): Promise<string> {
    const log = (await this.log()).split("\n").slice(-60).join("\n");
    return `--- daemon ${this.pid} (exited: ${this.exited}) log tail:\n${log}`;
  }

  signal(sig: Deno.Signal): void {
    this.child.kill(sig);
  }

  /** Stdout and stderr once the daemon has exited. */
  async output(): Promise<{ stdout: string; stderr: string }> {
    const [stdout, stderr] = await this.outputs;
    return { stdout, stderr };
  }

  /** Test cleanup: SIGKILL the daemon and anything it started, then reap it. */
  async kill(): Promise<void> {
    if (!this.exited) {
      for (const p of descendants(this.pid)) {
        try {
          Deno.kill(p.pid, "SIGKILL");
        } catch {
          // gone
        }
      }
      try {
        this.child.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    await this.done;
    await this.outputs;
  }
}

// ---------------------------------------------------------------------------------------
// The telnet shell over a plain TCP connection: the daemon tests must also run where no nc or
// telnet is installed (issue 12); tests/shell/programs_test.ts drives the real programs.

/** Sends `lines` (a `quit` is appended) and returns what the shell answered, LF line ends. */
export async function shell(port: number, lines: string[], host = "127.0.0.1"): Promise<string> {
  const conn = await Deno.connect({ hostname: host, port });
  const timer = setTimeout(() => conn.close(), 10_000);
  try {
    const data = new TextEncoder().encode([...lines, "quit"].map((l) => `${l}\r\n`).join(""));
    for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
    let text = "";
    const dec = new TextDecoder();
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
    text = text.replaceAll("\r\n", "\n");
    if (!text.includes("Goodbye.")) throw new Error(`shell: no Goodbye:\n${text}`);
    return text;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the timer or the server
    }
  }
}

// ---------------------------------------------------------------------------------------
// Job directories.

export interface RevFile {
  id: string;
  /** Unix seconds with microseconds. */
  ts: number;
  tags: string[];
  complete: boolean;
  duration?: number;
  trust?: string;
  error?: string;
}

const TS_RE = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?(?:\+00:00|Z)?$/;

/** `2015-09-01 07:06:47.123456+00:00` (as .rev files carry it) to Unix seconds. */
export function parseRevTime(text: string): number {
  const m = TS_RE.exec(text.trim());
  if (!m) throw new Error(`unexpected timestamp ${text}`);
  return Date.parse(`${m[1]}T${m[2]}Z`) / 1000 + Number((m[3] ?? "0").padEnd(6, "0")) / 1e6;
}

/** The inverse for crafted revisions. */
export function formatRevTime(seconds: number): string {
  const whole = Math.floor(seconds);
  const us = Math.round((seconds - whole) * 1e6);
  const d = new Date(whole * 1000).toISOString(); // 2015-09-01T07:06:47.000Z
  return `${d.slice(0, 10)} ${d.slice(11, 19)}.${String(us).padStart(6, "0")}+00:00`;
}

/** `YYYY-MM-DD HH:MM:SS UTC` as the status file and `check` print times. */
export function formatStatusTime(seconds: number): string {
  const d = new Date(Math.floor(seconds) * 1000).toISOString();
  return `${d.slice(0, 10)} ${d.slice(11, 19)} UTC`;
}

/** Regular `<id>.rev` files of a job directory (symlinks skipped), oldest first. */
export async function readRevs(jobDir: string): Promise<RevFile[]> {
  const out: RevFile[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(jobDir)];
  } catch {
    return [];
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".rev")) continue;
    let raw: Record<string, unknown>;
    try {
      raw = YAML.parse(await Deno.readTextFile(join(jobDir, e.name)));
    } catch {
      continue; // removed meanwhile
    }
    const stats = (raw.stats ?? {}) as Record<string, unknown>;
    out.push({
      id: String(raw.uuid),
      ts: parseRevTime(String(raw.timestamp)),
      tags: ((raw.tags as string[]) ?? []).map(String).sort(),
      complete: typeof stats.duration === "number",
      duration: stats.duration as number | undefined,
      trust: raw.trust as string | undefined,
      error: raw.error as string | undefined,
    });
  }
  return out.sort((a, b) => a.ts - b.ts);
}

/** Revisions of several jobs seen at any moment, polled in the background. */
export class RevObserver {
  /** job -> id -> revision as first seen (original tags), `complete` once seen complete. */
  readonly seen = new Map<string, Map<string, RevFile>>();
  private timer?: ReturnType<typeof setInterval>;
  private busy = false;

  constructor(private base: string, jobs: string[]) {
    for (const j of jobs) this.seen.set(j, new Map());
  }

  start(intervalMs = 100): this {
    this.timer = setInterval(() => void this.poll(), intervalMs);
    return this;
  }

  async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const [job, revs] of this.seen) {
        for (const r of await readRevs(join(this.base, job))) {
          const known = revs.get(r.id);
          if (!known) revs.set(r.id, r);
          else if (r.complete && !known.complete) {
            known.complete = true;
            known.duration = r.duration;
          }
        }
      }
    } finally {
      this.busy = false;
    }
  }

  /** Every revision of `job` ever seen complete, oldest first. */
  completed(job: string): RevFile[] {
    return [...this.seen.get(job)!.values()].filter((r) => r.complete).sort((a, b) => a.ts - b.ts);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.busy) await delay(10);
    await this.poll();
  }
}

/** Reads the status file as a list of string mappings. */
export async function readStatus(file: string): Promise<Record<string, string>[]> {
  return YAML.parse(await Deno.readTextFile(file)) as Record<string, string>[];
}

/** A scheduler config file from plain objects. */
export interface TestConfig {
  global: Record<string, unknown>;
  schedules: Record<string, Record<string, { interval: string; keep: number }>>;
  jobs: Record<string, { schedule: string; backend?: string; source: Record<string, unknown> }>;
}

export async function writeConfig(file: string, config: TestConfig): Promise<void> {
  await Deno.writeTextFile(file, YAML.stringify(config));
}

/** `backy ARGS` from source with a deadline: a command that should exit must not hang a test. */
export async function backyWithin(
  args: string[],
  ms: number,
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MOD, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // exited meanwhile
    }
  }, ms);
  const out = await child.output();
  clearTimeout(timer);
  const elapsed = Date.now() - started;
  if (out.signal === "SIGKILL") {
    throw new Error(`backy ${args.join(" ")} still running after ${ms} ms`);
  }
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: elapsed,
  };
}
