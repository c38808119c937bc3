/**
 * Leases in the bucket (docs/s3.md): `leases/<job>` while a host backs up or expires a job,
 * `gc/lease` while a host runs a collection step. A lease names its holder and expires
 * unless renewed (every quarter of its time to live, by the server's clock). A host refuses
 * a job another host (or another live process) holds; an expired lease is taken over. The
 * holder stops trusting its lease once it could not renew it for most of its time to live.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";
import type { S3Client } from "./s3_client.ts";
import { isLive, type Lease, parseLease } from "./s3_layout.ts";

const log = logger("s3");

/** Whether a process with this PID runs on this host (for leases of the same host). */
function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** Why `lease` keeps `host` out, or undefined when it may be taken (absent, expired, dead). */
export function leaseConflict(
  lease: Lease | undefined,
  host: string,
  now: number,
  alive: (pid: number) => boolean = pidAlive,
): string | undefined {
  if (!lease || !isLive(lease, now)) return undefined;
  if (lease.host === host && (lease.pid === Deno.pid || !alive(lease.pid))) return undefined;
  const until = new Date(lease.expires).toISOString().replace(/\.\d+Z$/, "Z");
  return `held by host '${lease.host}' (${lease.op}, pid ${lease.pid}) until ${until} unless renewed`;
}

export class LeaseHolder {
  private timer?: ReturnType<typeof setInterval>;
  /** performance.now() of the last successful write. */
  private renewed: number;

  private constructor(
    private readonly client: S3Client,
    readonly key: string,
    readonly lease: Lease,
    private readonly ttlMs: number,
  ) {
    this.renewed = performance.now();
  }

  /** Takes the lease at `key` or throws (BackyError) naming its holder. */
  static async acquire(
    client: S3Client,
    key: string,
    what: string,
    op: string,
    host: string,
    ttlSeconds: number,
  ): Promise<LeaseHolder> {
    const ttlMs = ttlSeconds * 1000;
    const current = await client.get(key);
    const old = current ? parseLeaseOr(current, key) : undefined;
    const conflict = leaseConflict(old, host, client.serverNow());
    if (conflict) throw new BackyError(`${what} is ${conflict}; not touching it`);
    const now = client.serverNow();
    const lease: Lease = {
      id: crypto.randomUUID(),
      host,
      pid: Deno.pid,
      op,
      started: now,
      expires: now + ttlMs,
    };
    const body = encode(lease);
    // Absent: only if still absent (two hosts at once: one wins). Stale: overwrite, then
    // read back, so of two hosts taking over the same stale lease only one goes on.
    const written = current
      ? await client.put(key, body, { contentType: "application/json" })
      : await client.put(key, body, { ifNoneMatch: true, contentType: "application/json" });
    const check = await client.get(key);
    const now2 = check ? parseLeaseOr(check, key) : undefined;
    if (!written || now2?.id !== lease.id) {
      const c = leaseConflict(now2, host, client.serverNow()) ?? "taken by another host";
      throw new BackyError(`${what} is ${c}; not touching it`);
    }
    const holder = new LeaseHolder(client, key, lease, ttlMs);
    const timer = setInterval(() => holder.renew(), Math.max(1000, ttlMs / 4));
    Deno.unrefTimer(timer);
    holder.timer = timer;
    return holder;
  }

  /** Whether the holder may still act on the lease (renewed within most of its time). */
  valid(): boolean {
    return performance.now() - this.renewed < this.ttlMs - Math.min(10_000, this.ttlMs / 4);
  }

  /** Throws when the lease can no longer be trusted (e.g. the bucket was unreachable). */
  assertValid(what: string): void {
    if (!this.valid()) {
      throw new BackyError(
        `${what}: lease ${this.key} could not be renewed in time; another host may take over`,
      );
    }
  }

  async renew(): Promise<void> {
    try {
      this.lease.expires = this.client.serverNow() + this.ttlMs;
      const t = performance.now();
      await this.client.put(this.key, encode(this.lease), { contentType: "application/json" });
      this.renewed = t;
    } catch (e) {
      log.warning("Cannot renew lease", { lease: this.key, error: errorMessage(e) });
    }
  }

  /** Stops renewing and deletes the lease if it is still ours; never throws. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    try {
      const current = await this.client.get(this.key);
      if (current && parseLeaseOr(current, this.key).id === this.lease.id) {
        await this.client.delete(this.key);
      }
    } catch (e) {
      log.warning("Cannot release lease (it expires by itself)", {
        lease: this.key,
        error: errorMessage(e),
      });
    }
  }
}

function encode(lease: Lease): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(lease));
}

function parseLeaseOr(bytes: Uint8Array, key: string): Lease {
  try {
    return parseLease(bytes);
  } catch (e) {
    throw new BackyError(`lease object ${key} is unreadable: ${errorMessage(e)}`);
  }
}
