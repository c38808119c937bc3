/** A raw TCP client for the shell tests: bytes in, binary strings (one char per byte) out. */

export function binary(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

export function bytesOf(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

export class Client {
  #pending = "";
  #eof = false;

  private constructor(readonly conn: Deno.TcpConn) {}

  static async connect(port: number, hostname = "127.0.0.1"): Promise<Client> {
    return new Client(await Deno.connect({ hostname, port }));
  }

  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? bytesOf(data) : data;
    for (let off = 0; off < bytes.length;) off += await this.conn.write(bytes.subarray(off));
  }

  /** One read; null at end of stream. Fails the test instead of hanging. */
  async #read(timeoutMs: number): Promise<string | null> {
    const buf = new Uint8Array(65536);
    const timer = setTimeout(() => this.close(), timeoutMs);
    try {
      const n = await this.conn.read(buf);
      return n === null ? null : binary(buf.subarray(0, n));
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) return null;
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Everything up to and including `marker`; the rest stays for the next call. */
  async readUntil(marker: string, timeoutMs = 10_000): Promise<string> {
    for (;;) {
      const i = this.#pending.indexOf(marker);
      if (i >= 0) {
        const out = this.#pending.slice(0, i + marker.length);
        this.#pending = this.#pending.slice(i + marker.length);
        return out;
      }
      const chunk = this.#eof ? null : await this.#read(timeoutMs);
      if (chunk === null) {
        this.#eof = true;
        throw new Error(`end of stream before ${JSON.stringify(marker)}: ${this.#pending}`);
      }
      this.#pending += chunk;
    }
  }

  /** Everything until the server closes the connection. */
  async readToEnd(timeoutMs = 10_000): Promise<string> {
    while (!this.#eof) {
      const chunk = await this.#read(timeoutMs);
      if (chunk === null) this.#eof = true;
      else this.#pending += chunk;
    }
    const out = this.#pending;
    this.#pending = "";
    return out;
  }

  /** Reads at least `n` bytes (or to the end), then stops. */
  async readSome(n: number, timeoutMs = 10_000): Promise<string> {
    while (!this.#eof && this.#pending.length < n) {
      const chunk = await this.#read(timeoutMs);
      if (chunk === null) this.#eof = true;
      else this.#pending += chunk;
    }
    const out = this.#pending;
    this.#pending = "";
    return out;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
  }
}
