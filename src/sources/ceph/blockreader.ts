/**
 * Random-access reads of an RBD snapshot without kernel modules, for sampled verification
 * (spec 3.6, design D11).
 *
 * backy 2.1 mapped the snapshot with the kernel client (`rbd map`); neither that nor rbd-nbd
 * works without the rbd/nbd kernel modules. Instead qemu-nbd (librbd in user space, Debian's
 * qemu-utils + qemu-block-extra) serves the snapshot read-only on a private unix socket and
 * a minimal NBD client here reads from it: fixed-newstyle handshake, NBD_OPT_GO, simple
 * replies, NBD_CMD_READ (several in flight, matched by handle), NBD_CMD_DISC.
 * Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
 *
 * qemu rounds the export size up to a multiple of 512 bytes, so the true size comes from
 * `rbd info` and reads are bounded by it.
 */
import { writeAllTo } from "../../util/io.ts";
import { BackyError, errorMessage } from "../../util/errors.ts";
import { Rbd } from "./rbd.ts";

export interface SnapshotReader extends AsyncDisposable {
  /** Size of the snapshot in bytes. */
  readonly size: number;
  /** PID of the qemu-nbd serving it (gone after close()). */
  readonly pid: number;
  /**
   * `length` bytes at `offset`; shorter only where the snapshot ends (like pread). Several
   * reads may be in flight at once.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Disconnects and terminates qemu-nbd. Idempotent. */
  close(): Promise<void>;
}

export interface SnapshotReaderOptions {
  /** qemu-nbd binary; default `$BACKY_QEMU_NBD`, else `qemu-nbd` from PATH. */
  binary?: string;
  /** Extra environment for qemu-nbd (merged over the inherited one); CEPH_CONF is read here. */
  env?: Record<string, string>;
  /** How long qemu-nbd may take to open the snapshot and answer (default 60 s). */
  timeoutMs?: number;
  /** The snapshot's size if the caller knows it; else asked from `rbd info`. */
  size?: number;
  /** For `rbd info` when `size` is not given; default: `new Rbd({ env })`. */
  rbd?: Rbd;
}

const KiB = 1024;
const MiB = 1024 * KiB;

const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
const OPT_REPLY_MAGIC = 0x0003e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
const FLAG_FIXED_NEWSTYLE = 1;
const FLAG_NO_ZEROES = 2;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const REP_FLAG_ERROR = 0x80000000;
const INFO_EXPORT = 0;
const INFO_BLOCK_SIZE = 3;
const CMD_READ = 0;
const CMD_DISC = 2;
/** Largest request payload a client may assume without block size negotiation. */
const DEFAULT_MAX_PAYLOAD = 32 * MiB;

/**
 * qemu's `rbd:` filename: `rbd:POOL/IMAGE@SNAP[:conf=PATH]`. qemu splits it at `/` (pool,
 * and namespace inside the image part), `@` (snapshot) and `:` (options), honouring
 * backslash escapes; each component gets exactly the escapes its position needs.
 */
export function qemuRbdFilename(
  pool: string,
  image: string,
  snap: string,
  conf?: string,
): string {
  const name = (s: string) => s.replace(/[\\/@:]/g, (c) => `\\${c}`);
  const value = (s: string) => s.replace(/[\\:]/g, (c) => `\\${c}`);
  return `rbd:${name(pool)}/${name(image)}@${value(snap)}` +
    (conf ? `:conf=${value(conf)}` : "");
}

/**
 * Serves `POOL/IMAGE@SNAP` with qemu-nbd and connects to it. The caller must close() the
 * reader; qemu-nbd is terminated on every failure path here, and exits by itself when the
 * connection goes away (also if this process dies).
 */
export async function openSnapshotReader(
  pool: string,
  image: string,
  snap: string,
  options: SnapshotReaderOptions = {},
): Promise<SnapshotReader> {
  const binary = options.binary ?? Deno.env.get("BACKY_QEMU_NBD") ?? "qemu-nbd";
  const conf = options.env?.CEPH_CONF ?? Deno.env.get("CEPH_CONF");
  const filename = qemuRbdFilename(pool, image, snap, conf);
  const spec = `${pool}/${image}@${snap}`;
  const timeoutMs = options.timeoutMs ?? 60_000;
  let size = options.size;
  if (size === undefined) {
    const info = await (options.rbd ?? new Rbd({ env: options.env })).info(spec);
    if (!info) throw new BackyError(`cannot read ${spec}: snapshot does not exist`);
    size = info.size;
  }

  // a private directory: nobody else can connect, and no stale socket can be mistaken for ours
  const dir = await Deno.makeTempDir({ prefix: "backy-nbd-" });
  const socket = `${dir}/nbd.sock`;
  const server = new Server(
    binary,
    [
      // no --persistent: qemu-nbd then exits by itself when our one connection closes, so even
      // a backy killed with SIGKILL leaves no qemu-nbd (and no image watch) behind
      "--read-only",
      "--format=raw",
      `--socket=${socket}`,
      filename,
    ],
    options.env,
    dir,
  );
  try {
    server.start();
  } catch (e) {
    await server.stop();
    throw e instanceof BackyError ? e : new BackyError(
      `cannot run qemu-nbd (${binary}) to read ${spec}: ${errorMessage(e)}; ` +
        "install qemu-utils and qemu-block-extra or set BACKY_QEMU_NBD",
      { cause: e },
    );
  }

  let nbd: NbdConnection;
  try {
    nbd = await withDeadline(connectAndHandshake(socket, server), timeoutMs, server);
  } catch (e) {
    // qemu-nbd listens before it opens the image; when opening fails it exits, which the
    // handshake sees as EOF. Its stderr has the real reason.
    const exited = await server.waitExit(2000);
    await server.stop();
    const why = server.stderrSummary();
    if (exited !== undefined) {
      throw new BackyError(
        `qemu-nbd could not serve ${spec} (exit ${exited.code}): ${why}`,
        { cause: e },
      );
    }
    throw new BackyError(
      `qemu-nbd serving ${spec} did not answer: ${errorMessage(e)}${
        why ? ` (stderr: ${why})` : ""
      }`,
      { cause: e },
    );
  }

  if (nbd.size !== Math.ceil(size / 512) * 512) {
    await nbd.close();
    await server.stop();
    throw new BackyError(
      `qemu-nbd reports ${nbd.size} bytes for ${spec}, rbd ${size}: not the same image?`,
    );
  }
  nbd.limit = size;

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await nbd.close();
    await server.stop();
  };
  return {
    size,
    pid: server.pid,
    read: (offset, length) => {
      if (closed) return Promise.reject(new BackyError(`reader of ${spec} is closed`));
      if (
        !Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) ||
        length < 0
      ) {
        return Promise.reject(
          new BackyError(`invalid read of ${spec}: offset ${offset}, length ${length}`),
        );
      }
      return nbd.read(offset, length).catch((e) => {
        throw new BackyError(
          `reading ${spec} through qemu-nbd failed: ${errorMessage(e)}`,
          { cause: e },
        );
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** The qemu-nbd child process, its stderr, and its cleanup. */
class Server {
  #child?: Deno.ChildProcess;
  #status?: Deno.CommandStatus;
  #exited?: Promise<Deno.CommandStatus>;
  #stderr = new TailBuffer(16 * KiB);
  #stderrDone?: Promise<void>;
  #onUnload = () => {
    // the program ends without close(): closing the socket stops qemu-nbd anyway, this only
    // makes it prompt (SIGTERM, not SIGKILL: a killed qemu-nbd leaves a watch on the image)
    try {
      this.#child?.kill("SIGTERM");
    } catch {
      // already gone
    }
  };

  constructor(
    readonly binary: string,
    readonly args: string[],
    readonly env: Record<string, string> | undefined,
    readonly dir: string,
  ) {}

  get pid(): number {
    return this.#child?.pid ?? -1;
  }

  get status(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited!;
  }

  /** Throws (e.g. NotFound) when the binary cannot be run. */
  start(): void {
    this.#child = new Deno.Command(this.binary, {
      args: this.args,
      env: this.env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#exited = this.#child.status.then((s) => (this.#status = s));
    this.#stderrDone = this.#stderr.consume(this.#child.stderr);
    globalThis.addEventListener("unload", this.#onUnload);
  }

  /** The exit status if qemu-nbd exits within `ms`, else undefined. */
  async waitExit(ms: number): Promise<Deno.CommandStatus | undefined> {
    if (!this.#exited) return undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)));
    try {
      return await Promise.race([this.#exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  stderrSummary(): string {
    const lines = this.#stderr.text().split("\n").map((l) => l.trim()).filter((l) => l);
    const text = lines.join("; ");
    return text.length > 500 ? `${text.slice(0, 497)}...` : text;
  }

  /** SIGTERM (qemu-nbd exits cleanly on it), SIGKILL after 5 s; removes the socket dir. */
  async stop(): Promise<void> {
    if (this.#child) {
      if (this.#status === undefined) {
        try {
          this.#child.kill("SIGTERM");
        } catch {
          // exited meanwhile
        }
        if ((await this.waitExit(5000)) === undefined) {
          try {
            this.#child.kill("SIGKILL");
          } catch {
            // exited meanwhile
          }
          await this.#exited;
        }
      }
      await this.#stderrDone;
      globalThis.removeEventListener("unload", this.#onUnload);
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Keeps the last `limit` bytes of a stream (stderr of a long-running child). */
class TailBuffer {
  #chunks: Uint8Array[] = [];
  #length = 0;
  constructor(readonly limit: number) {}

  async consume(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream) {
        this.#chunks.push(chunk);
        this.#length += chunk.length;
        while (this.#length - this.#chunks[0].length >= this.limit) {
          this.#length -= this.#chunks.shift()!.length;
        }
      }
    } catch {
      // diagnostics only
    }
  }

  text(): string {
    const all = new Uint8Array(this.#length);
    let at = 0;
    for (const c of this.#chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder().decode(all.subarray(Math.max(0, this.#length - this.limit)));
  }
}

/** Waits for the handshake, but gives up after `ms` or as soon as qemu-nbd exits. */
async function withDeadline(
  p: Promise<NbdConnection>,
  ms: number,
  server: Server,
): Promise<NbdConnection> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  const died = server.exited.then((s) => {
    throw new Error(`qemu-nbd exited with status ${s.code}`);
  });
  died.catch(() => {});
  try {
    return await Promise.race([p, timeout, died]);
  } catch (e) {
    p.then((nbd) => nbd.close(), () => {}); // a late connection must not leak
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

async function connectAndHandshake(socket: string, server: Server): Promise<NbdConnection> {
  // qemu-nbd creates the socket only after parsing its arguments; poll for it
  let conn: Deno.UnixConn | undefined;
  for (let wait = 2; conn === undefined; wait = Math.min(wait * 2, 50)) {
    if (server.status !== undefined) throw new Error("qemu-nbd exited");
    try {
      conn = await Deno.connect({ transport: "unix", path: socket });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused)) {
        throw e;
      }
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  try {
    return await NbdConnection.handshake(conn);
  } catch (e) {
    try {
      conn.close();
    } catch {
      // already closed
    }
    throw e;
  }
}

async function readExact(conn: Deno.Conn, buf: Uint8Array): Promise<Uint8Array> {
  let at = 0;
  while (at < buf.length) {
    const n = await conn.read(buf.subarray(at));
    if (n === null) throw new Error("NBD server closed the connection");
    at += n;
  }
  return buf;
}

interface Pending {
  buf: Uint8Array;
  offset: number;
  resolve(): void;
  reject(e: Error): void;
}

/** One NBD connection in the transmission phase (simple replies only). */
class NbdConnection {
  #pending = new Map<number, Pending>();
  #nextHandle = 1;
  #writes: Promise<void> = Promise.resolve();
  #receiving = false;
  #failure?: Error;
  #closed = false;
  /** Reads end here (the true image size; the export may be padded to 512 bytes). */
  limit: number;

  private constructor(
    readonly conn: Deno.UnixConn,
    readonly size: number,
    readonly maxPayload: number,
  ) {
    this.limit = size;
  }

  static async handshake(conn: Deno.UnixConn): Promise<NbdConnection> {
    const hello = new DataView((await readExact(conn, new Uint8Array(18))).buffer);
    if (hello.getBigUint64(0) !== NBDMAGIC) throw new Error("not an NBD server");
    if (hello.getBigUint64(8) !== IHAVEOPT) {
      throw new Error("NBD server does not speak the newstyle protocol");
    }
    const serverFlags = hello.getUint16(16);
    if (!(serverFlags & FLAG_FIXED_NEWSTYLE)) {
      throw new Error("NBD server does not support fixed newstyle negotiation");
    }
    const clientFlags = new Uint8Array(4);
    new DataView(clientFlags.buffer).setUint32(
      0,
      FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES),
    );
    await writeAllTo(conn, clientFlags);

    // NBD_OPT_GO for the default export "", also asking for block size limits
    const opt = new Uint8Array(16 + 8);
    const ov = new DataView(opt.buffer);
    ov.setBigUint64(0, IHAVEOPT);
    ov.setUint32(8, OPT_GO);
    ov.setUint32(12, 8);
    ov.setUint32(16, 0); // name length
    ov.setUint16(20, 1); // one info request
    ov.setUint16(22, INFO_BLOCK_SIZE);
    await writeAllTo(conn, opt);

    let size: number | undefined;
    let maxPayload = DEFAULT_MAX_PAYLOAD;
    for (;;) {
      const h = new DataView((await readExact(conn, new Uint8Array(20))).buffer);
      if (h.getBigUint64(0) !== OPT_REPLY_MAGIC) throw new Error("bad NBD option reply magic");
      const type = h.getUint32(12);
      const len = h.getUint32(16);
      if (len > 64 * KiB) throw new Error(`NBD option reply too long (${len} bytes)`);
      const data = await readExact(conn, new Uint8Array(len));
      const dv = new DataView(data.buffer);
      if (type === REP_ACK) break;
      if (type & REP_FLAG_ERROR) {
        const text = new TextDecoder().decode(data);
        throw new Error(
          `NBD server refused the export (error ${type & 0x7fffffff})${text ? `: ${text}` : ""}`,
        );
      }
      if (type === REP_INFO && len >= 2) {
        const info = dv.getUint16(0);
        if (info === INFO_EXPORT && len >= 12) size = Number(dv.getBigUint64(2));
        if (info === INFO_BLOCK_SIZE && len >= 14) {
          maxPayload = Math.min(DEFAULT_MAX_PAYLOAD, dv.getUint32(10));
        }
      }
    }
    if (size === undefined) throw new Error("NBD server did not report the export size");
    return new NbdConnection(conn, size, maxPayload);
  }

  /** `offset`/`length`: non-negative safe integers (checked by the caller). */
  async read(offset: number, length: number): Promise<Uint8Array> {
    if (this.#failure) throw this.#failure;
    const end = Math.min(offset + length, this.limit);
    const out = new Uint8Array(Math.max(0, end - offset));
    const parts: Promise<void>[] = [];
    for (let at = 0; at < out.length; at += this.maxPayload) {
      parts.push(this.#request(offset + at, out.subarray(at, at + this.maxPayload)));
    }
    await Promise.all(parts);
    return out;
  }

  #request(offset: number, buf: Uint8Array): Promise<void> {
    const handle = this.#nextHandle++;
    const req = new Uint8Array(28);
    const dv = new DataView(req.buffer);
    dv.setUint32(0, REQUEST_MAGIC);
    dv.setUint16(4, 0); // command flags
    dv.setUint16(6, CMD_READ);
    dv.setUint32(8, Math.floor(handle / 2 ** 32));
    dv.setUint32(12, handle >>> 0);
    dv.setBigUint64(16, BigInt(offset));
    dv.setUint32(24, buf.length);
    const done = new Promise<void>((resolve, reject) => {
      this.#pending.set(handle, { buf, offset, resolve, reject });
    });
    this.#send(req);
    if (!this.#receiving) {
      this.#receiving = true;
      this.#receive();
    }
    return done;
  }

  /** Requests are written one after another; a failed write fails the connection. */
  #send(bytes: Uint8Array): Promise<void> {
    this.#writes = this.#writes.then(() => writeAllTo(this.conn, bytes)).catch((e) =>
      this.#fail(e)
    );
    return this.#writes;
  }

  /** Reads replies while requests are outstanding, then stops (no idle read on the socket). */
  async #receive(): Promise<void> {
    const header = new Uint8Array(16);
    const hv = new DataView(header.buffer);
    try {
      while (this.#pending.size > 0) {
        await readExact(this.conn, header);
        if (hv.getUint32(0) !== SIMPLE_REPLY_MAGIC) throw new Error("bad NBD reply magic");
        const error = hv.getUint32(4);
        const handle = hv.getUint32(8) * 2 ** 32 + hv.getUint32(12);
        const p = this.#pending.get(handle);
        if (!p) throw new Error(`NBD reply for unknown handle ${handle}`);
        this.#pending.delete(handle);
        if (error !== 0) {
          // a simple error reply carries no data; the connection stays usable
          p.reject(
            new Error(`NBD read of ${p.buf.length} bytes at offset ${p.offset}: errno ${error}`),
          );
          continue;
        }
        await readExact(this.conn, p.buf);
        p.resolve();
      }
    } catch (e) {
      this.#fail(e);
    }
    // no await between the loop's last size check and this: a request added meanwhile
    // sees #receiving still true only while this loop will still serve it
    this.#receiving = false;
  }

  #fail(e: unknown): void {
    if (!this.#failure) {
      this.#failure = this.#closed
        ? new Error("NBD connection closed")
        : e instanceof Error
        ? e
        : new Error(String(e));
    }
    for (const p of this.#pending.values()) p.reject(this.#failure);
    this.#pending.clear();
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#failure) {
      const disc = new Uint8Array(28);
      const dv = new DataView(disc.buffer);
      dv.setUint32(0, REQUEST_MAGIC);
      dv.setUint16(6, CMD_DISC);
      await this.#send(disc);
    }
    this.#fail(new Error("NBD connection closed"));
  }
}
