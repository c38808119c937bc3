/** A small pool of data-path Workers (one per core) with request/response by id. */
import { BackyError } from "../util/errors.ts";
import { newDataWorker } from "../util/entry.ts";
import type {
  ApplyBlock,
  ApplyResult,
  BackupBlock,
  BackupResult,
  CheckBlock,
  CheckResult,
  ReadBlock,
  ReadResult,
  Request,
} from "./protocol.ts";

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class WorkerPool {
  private workers: Worker[] = [];
  private load: number[] = [];
  private pending = new Map<number, Pending & { worker: number }>();
  private nextId = 1;

  /** One Worker per core, at most two (the coordinator and rbd need CPU too). */
  static defaultSize(): number {
    return Math.max(1, Math.min(2, navigator.hardwareConcurrency || 2));
  }

  constructor(size = WorkerPool.defaultSize()) {
    for (let i = 0; i < size; i++) {
      const w = newDataWorker();
      w.onmessage = (ev) => this.settle(ev.data);
      w.onerror = (ev) => {
        ev.preventDefault();
        this.failAll(new BackyError(`data worker crashed: ${ev.message}`));
      };
      this.workers.push(w);
      this.load.push(0);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  private settle(msg: { id: number; result?: unknown; error?: string; code?: string }) {
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    this.load[p.worker]--;
    if (msg.error !== undefined) {
      p.reject(
        new BackyError(
          msg.code === "ENOSPC" && !/no space left/i.test(msg.error)
            ? `No space left on device: ${msg.error}`
            : msg.error,
        ),
      );
    } else p.resolve(msg.result);
  }

  private failAll(e: Error) {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(e);
    }
  }

  private send<T>(req: Request, transfer: Transferable[] = []): Promise<T> {
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i] < this.load[w]) w = i;
    const id = this.nextId++;
    this.load[w]++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, worker: w });
      this.workers[w].postMessage({ id, req }, { transfer });
    });
  }

  backup(req: Omit<BackupBlock, "op">): Promise<BackupResult> {
    return this.send({ op: "backup", ...req });
  }

  check(req: Omit<CheckBlock, "op">): Promise<CheckResult> {
    return this.send({ op: "check", ...req });
  }

  read(req: Omit<ReadBlock, "op">): Promise<ReadResult> {
    return this.send({ op: "read", ...req }, req.into ? [req.into.buffer as ArrayBuffer] : []);
  }

  /** The block's buffer moves to the Worker (no copy) and comes back in the result. */
  apply(req: Omit<ApplyBlock, "op">): Promise<ApplyResult> {
    return this.send({ op: "apply", ...req }, [req.data.buffer as ArrayBuffer]);
  }

  /** Closes the Workers' cached file descriptors (before fsync/rename by the coordinator). */
  async closeFiles(): Promise<void> {
    await Promise.all(this.workers.map((_, i) => {
      const id = this.nextId++;
      this.load[i]++;
      return new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject, worker: i });
        this.workers[i].postMessage({ id, req: { op: "close" } });
      });
    }));
  }

  terminate(): void {
    for (const w of this.workers) w.terminate();
    this.failAll(new BackyError("data workers stopped"));
    this.workers = [];
  }
}

/**
 * Runs `fn` over 0..count-1 with at most `window` in flight, delivering results in order
 * to `onResult` (ordered output for streams; bounded memory whatever the image size).
 */
export async function pipeline<T>(
  count: number,
  window: number,
  fn: (i: number) => Promise<T>,
  onResult: (i: number, r: T) => void | Promise<void>,
): Promise<void> {
  const inflight = new Map<number, Promise<T>>();
  let next = 0;
  let failure: unknown;
  const launch = () => {
    while (next < count && inflight.size < window && failure === undefined) {
      const p = fn(next);
      p.catch((e) => {
        failure ??= e;
      });
      inflight.set(next, p);
      next++;
    }
  };
  launch();
  for (let i = 0; i < count; i++) {
    const p = inflight.get(i)!;
    let r: T;
    try {
      r = await p;
    } catch (e) {
      // Let the blocks already in flight finish so no Worker writes after we return.
      await Promise.allSettled(inflight.values());
      throw e;
    }
    inflight.delete(i);
    await onResult(i, r);
    launch();
  }
}
