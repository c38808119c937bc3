/**
 * The scheduler's telnet shell (spec 6.1, design D13): a line server on every configured
 * address. No authentication, hence loopback only unless the configuration names another
 * address explicitly.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { execute } from "./commands.ts";
import type { SchedulerControl } from "../status/control.ts";
import { parseAddress } from "../config/address.ts";

export const MAX_LINE = 4096;
const PROMPT = "backy> ";
const LINGER_MS = 2000;

/** The subset of a logtape Logger the shell uses. */
export interface ShellLogger {
  debug(message: string, properties?: Record<string, unknown>): void;
  info(message: string, properties?: Record<string, unknown>): void;
  warn(message: string, properties?: Record<string, unknown>): void;
}

export interface ShellOptions {
  /** IP literals or `localhost`. */
  addrs: string[];
  /** 0 picks a free port per address (tests). */
  port: number;
  control: SchedulerControl;
  version: string;
  log?: ShellLogger;
  /** Permit addresses outside 127.0.0.0/8 and ::1 (only those the config names). */
  allowNonLoopback?: boolean;
  /** Further clients get `too many connections`. Default 32. */
  maxConnections?: number;
  /** A client that sends nothing for this long is disconnected. Default 1 hour. */
  idleTimeoutMs?: number;
  /** A client that takes none of our output for this long is disconnected. Default 60 s. */
  writeTimeoutMs?: number;
}

export interface ShellServer {
  listening: { hostname: string; port: number }[];
  /** Closes the listeners and every client connection. */
  close(): Promise<void>;
}

// Telnet command bytes (RFC 854).
const IAC = 255, DONT = 254, DO = 253, WONT = 252, WILL = 251, SB = 250, SE = 240;
const CR = 13, LF = 10, NUL = 0;

export type TelnetEvent =
  | { kind: "line"; text: string }
  | { kind: "tooLong" }
  | { kind: "reply"; bytes: Uint8Array };

// Decoder states.
const DATA = 0, AFTER_IAC = 1, OPTION = 2, SUB = 3, SUB_IAC = 4;

/**
 * Splits a telnet byte stream into lines. Option requests are refused (WILL → DONT,
 * DO → WONT), which keeps clients in the default NVT line mode; WONT/DONT need no answer
 * because every option already is off. Memory is bounded by MAX_LINE.
 */
export class TelnetDecoder {
  #state = DATA;
  #verb = 0;
  #line = new Uint8Array(MAX_LINE);
  #len = 0;
  #tooLong = false;
  #afterCr = false;
  #text = new TextDecoder();

  feed(chunk: Uint8Array): TelnetEvent[] {
    const events: TelnetEvent[] = [];
    for (const b of chunk) {
      switch (this.#state) {
        case DATA:
          if (b === IAC) this.#state = AFTER_IAC;
          else this.#data(b, events);
          break;
        case AFTER_IAC:
          if (b === IAC) {
            this.#state = DATA;
            this.#data(b, events);
          } else if (b >= WILL && b <= DONT) {
            this.#verb = b;
            this.#state = OPTION;
          } else if (b === SB) {
            this.#state = SUB;
          } else {
            this.#state = DATA; // NOP, GA, AYT, IP, ...: nothing to do for a line shell
          }
          break;
        case OPTION:
          if (this.#verb === WILL) {
            events.push({ kind: "reply", bytes: Uint8Array.of(IAC, DONT, b) });
          }
          if (this.#verb === DO) events.push({ kind: "reply", bytes: Uint8Array.of(IAC, WONT, b) });
          this.#state = DATA;
          break;
        case SUB:
          if (b === IAC) this.#state = SUB_IAC;
          break;
        case SUB_IAC:
          this.#state = b === SE ? DATA : SUB;
          break;
      }
    }
    return events;
  }

  /** End of input: a last line without line ending still counts. */
  finish(): TelnetEvent[] {
    const events: TelnetEvent[] = [];
    if (this.#tooLong || this.#len > 0) this.#endLine(events);
    return events;
  }

  #data(b: number, events: TelnetEvent[]): void {
    // CR LF and CR NUL are one line end; a bare LF (nc, scripts) is one too.
    if (this.#afterCr) {
      this.#afterCr = false;
      if (b === LF || b === NUL) return;
    }
    if (b === CR) {
      this.#afterCr = true;
      this.#endLine(events);
    } else if (b === LF) {
      this.#endLine(events);
    } else if (b === NUL) {
      // NVT no-op
    } else if (this.#tooLong) {
      // discarding the rest of an overlong line
    } else if (this.#len === MAX_LINE) {
      this.#tooLong = true;
      this.#len = 0;
    } else {
      this.#line[this.#len++] = b;
    }
  }

  #endLine(events: TelnetEvent[]): void {
    if (this.#tooLong) events.push({ kind: "tooLong" });
    else events.push({ kind: "line", text: this.#text.decode(this.#line.subarray(0, this.#len)) });
    this.#tooLong = false;
    this.#len = 0;
  }
}

/** Canonical IP literal and whether it is loopback; BackyError for anything else. */
export function parseShellAddress(addr: string): { hostname: string; loopback: boolean } {
  const parsed = parseAddress(addr);
  if (parsed) return parsed;
  const bare = addr.startsWith("[") && addr.endsWith("]") ? addr.slice(1, -1) : addr;
  if (bare.includes(":")) throw new BackyError(`telnet shell: not an IP address: ${addr}`);
  throw new BackyError(`telnet shell: not an IP address: ${addr} (host names are not accepted)`);
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

const encoder = new TextEncoder();

function crlf(text: string): Uint8Array {
  // UTF-8 never produces 0xFF, so no IAC escaping is needed.
  return encoder.encode(text.replace(/\r?\n/g, "\r\n"));
}

/** One client connection. Every failure ends only this session. */
class Session {
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly conn: Deno.TcpConn,
    readonly peer: string,
    private readonly opts: Required<Pick<ShellOptions, "idleTimeoutMs" | "writeTimeoutMs">>,
  ) {}

  close(): void {
    this.#clearTimer();
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // already gone
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Closing the connection is what unblocks a pending read or write on time-out. */
  async #timed<T>(ms: number, op: () => Promise<T>): Promise<T> {
    this.#clearTimer();
    this.#timer = setTimeout(() => this.close(), ms);
    try {
      return await op();
    } finally {
      this.#clearTimer();
    }
  }

  write(text: string): Promise<void> {
    return this.writeBytes(crlf(text));
  }

  /** The time-out applies per chunk: a slow reader that makes progress is fine. */
  async writeBytes(bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length;) {
      off += await this.#timed(
        this.opts.writeTimeoutMs,
        () => this.conn.write(bytes.subarray(off)),
      );
    }
  }

  read(buf: Uint8Array): Promise<number | null> {
    return this.#timed(this.opts.idleTimeoutMs, () => this.conn.read(buf));
  }

  /**
   * Send FIN, then swallow what the client still sends for a moment: closing a socket with
   * unread input makes the kernel send RST, which can destroy our last output in flight.
   */
  async linger(): Promise<void> {
    this.#clearTimer();
    const deadline = setTimeout(() => this.close(), LINGER_MS); // one bound for the whole drain
    try {
      await this.conn.closeWrite();
      const buf = new Uint8Array(4096);
      for (let total = 0; total < 65536;) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        total += n;
      }
    } catch {
      // the client went away first: fine
    } finally {
      clearTimeout(deadline);
      this.close();
    }
  }
}

/** Starts listening on all addresses; rejects with BackyError if one is refused or cannot be bound. */
export function startShell(options: ShellOptions): Promise<ShellServer> {
  // Binding is synchronous in Deno; the executor turns a throw into a rejection.
  return new Promise((resolve) => resolve(open(options)));
}

function open(options: ShellOptions): ShellServer {
  const { control, version, log } = options;
  const maxConnections = options.maxConnections ?? 32;
  const timeouts = {
    idleTimeoutMs: options.idleTimeoutMs ?? 3_600_000,
    writeTimeoutMs: options.writeTimeoutMs ?? 60_000,
  };

  const hostnames = options.addrs.map((addr) => {
    const { hostname, loopback } = parseShellAddress(addr);
    if (!loopback && !options.allowNonLoopback) {
      throw new BackyError(
        `telnet shell: refusing to listen on non-loopback address ${addr} (no authentication)`,
      );
    }
    return hostname;
  });

  const listeners: Deno.TcpListener[] = [];
  for (const hostname of new Set(hostnames)) {
    try {
      listeners.push(Deno.listen({ hostname, port: options.port, transport: "tcp" }));
    } catch (e) {
      for (const l of listeners) l.close();
      throw new BackyError(
        `telnet shell: cannot listen on ${hostPort(hostname, options.port)}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
  }

  let closing = false;
  const sessions = new Set<Session>(); // every open connection, for close()
  let serving = 0;
  const tasks = new Set<Promise<void>>();
  // Per-connection tasks must never reject: an unhandled rejection would end the daemon.
  const track = (p: Promise<void>) => {
    const task: Promise<void> = p.catch(() => {}).finally(() => tasks.delete(task));
    tasks.add(task);
  };

  /** Returns true when the client said quit (and should get a graceful close). */
  async function serve(session: Session): Promise<boolean> {
    const decoder = new TelnetDecoder();
    const buf = new Uint8Array(4096);
    await session.write(`backy ${version}\nReady.\n${PROMPT}`);
    // Lines are handled strictly in order; not reading while a command runs is the
    // back-pressure for pipelined input.
    for (;;) {
      const n = await session.read(buf);
      const events = n === null ? decoder.finish() : decoder.feed(buf.subarray(0, n));
      for (const event of events) {
        if (event.kind === "reply") {
          await session.writeBytes(event.bytes);
        } else if (event.kind === "tooLong") {
          await session.write(`line too long\n${PROMPT}`);
        } else {
          if (event.text.trim() !== "") {
            log?.debug("telnet shell command", { peer: session.peer, command: event.text });
          }
          const result = await execute(event.text, control);
          if (result.close) {
            await session.write(result.output);
            return true;
          }
          await session.write(`${result.output}${PROMPT}`);
        }
      }
      if (n === null) return false;
    }
  }

  function accepted(conn: Deno.TcpConn): void {
    const peer = hostPort(conn.remoteAddr.hostname, conn.remoteAddr.port);
    const session = new Session(conn, peer, timeouts);
    if (closing || sessions.size >= 2 * maxConnections) {
      session.close(); // a flood: not even a message, to bound open sockets
      return;
    }
    sessions.add(session);
    if (serving >= maxConnections) {
      log?.warn("telnet shell: too many connections, refusing client", { peer });
      track((async () => {
        try {
          await session.write("too many connections\n");
        } catch {
          // nothing to tell a client that is gone
        }
        await session.linger();
        sessions.delete(session);
      })());
      return;
    }
    serving++;
    log?.info("telnet shell: client connected", { peer });
    track((async () => {
      let quit = false;
      try {
        quit = await serve(session);
      } catch (e) {
        if (!session.closed) {
          log?.debug("telnet shell: connection failed", { peer, error: errorMessage(e) });
        }
      }
      serving--; // lingering is bounded and needs no slot
      log?.info("telnet shell: client disconnected", { peer });
      if (quit) await session.linger();
      session.close();
      sessions.delete(session);
    })());
  }

  async function acceptLoop(listener: Deno.TcpListener): Promise<void> {
    while (!closing) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource) return;
        // e.g. out of file descriptors: keep serving, but do not spin.
        log?.warn("telnet shell: accept failed", { error: errorMessage(e) });
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      accepted(conn);
    }
  }

  const loops = listeners.map((l) => acceptLoop(l));
  const listening = listeners.map((l) => ({ hostname: l.addr.hostname, port: l.addr.port }));
  for (const l of listening) {
    log?.info("telnet shell listening", { address: hostPort(l.hostname, l.port) });
  }

  return {
    listening,
    async close() {
      if (closing) return;
      closing = true;
      for (const l of listeners) {
        try {
          l.close();
        } catch {
          // already closed
        }
      }
      for (const s of sessions) s.close();
      await Promise.all(loops);
      while (tasks.size > 0) await Promise.all([...tasks]);
    },
  };
}
