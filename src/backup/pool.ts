/** A small pool of data-path Workers (one per core) with typed request/response by id. */
import { BackyError } from "../util/errors.ts";
import { DamagedBlockError } from "../store/block_store.ts";
import { newDataWorker } from "./worker_entry.ts";
import type {
  CheckRequest,
  CheckResult,
  Op,
  Ops,
  ReadRequest,
  ReadResult,
  StoreRequest,
  StoreResult,
  WorkerMessage,
  WorkerReply,
} from "./protocol.ts";

/** A Worker starts in milliseconds; far longer means it never will (e.g. a broken bundle). */
const WORKER_START_MS = 60_000;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  worker: number;
}

export class WorkerPool {
  private workers: Worker[] = [];
  private load: number[] = [];
  private pending = new Map<number, Pending>();
  private nextId = 1;
  /** Workers that said they serve requests; one that never does fails the pool. */
  private ready = 0;
  private startTimer: ReturnType<typeof setTimeout> | undefined;
  private broken: BackyError | undefined;

  /** One Worker per core, at most two (the coordinator and rbd need CPU too). */
  static defaultSize(): number {
    return Math.max(1, Math.min(2, navigator.hardwareConcurrency || 2));
  }

  constructor(size = WorkerPool.defaultSize()) {
    for (let i = 0; i < size; i++) {
      const w = newDataWorker();
      w.onmessage = (ev: MessageEvent<WorkerReply>) => this.settle(ev.data);
      w.onerror = (ev) => {
        ev.preventDefault();
        this.failAll(new BackyError(`data worker crashed: ${ev.message}`));
      };
      this.workers.push(w);
      this.load.push(0);
    }
    this.startTimer = setTimeout(() => {
      this.broken = new BackyError(
        `data workers did not start within ${WORKER_START_MS / 1000} s`,
      );
      this.failAll(this.broken);
    }, WORKER_START_MS);
    Deno.unrefTimer(this.startTimer);
  }

  get size(): number {
    return this.workers.length;
  }

  private settle(msg: WorkerReply) {
    if ("ready" in msg) {
      this.ready++;
      if (this.ready === this.workers.length) clearTimeout(this.startTimer);
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    this.load[p.worker]--;
    if ("error" in msg) p.reject(workerError(msg));
    else p.resolve(msg.result);
  }

  private failAll(e: Error) {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(e);
    }
  }

  private post<K extends Op>(
    w: number,
    op: K,
    req: Ops[K][0],
    transfer: Transferable[] = [],
  ): Promise<Ops[K][1]> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    this.load[w]++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, worker: w });
      this.workers[w].postMessage({ id, op, req } satisfies WorkerMessage<K>, { transfer });
    });
  }

  /** Sends a request to the least loaded Worker. */
  private send<K extends Op>(op: K, req: Ops[K][0], transfer?: Transferable[]) {
    let w = 0;
    for (let i = 1; i < this.workers.length; i++) if (this.load[i] < this.load[w]) w = i;
    return this.post(w, op, req, transfer);
  }

  /** Stores a block; a `data` block's buffer moves to the Worker and comes back in the result. */
  store(req: StoreRequest): Promise<StoreResult> {
    const transfer = req.content.from === "data" ? [req.content.data.buffer as ArrayBuffer] : [];
    return this.send("store", req, transfer);
  }

  check(req: CheckRequest): Promise<CheckResult> {
    return this.send("check", req);
  }

  read(req: ReadRequest): Promise<ReadResult> {
    return this.send("read", req, req.into ? [req.into.buffer as ArrayBuffer] : []);
  }

  /** Closes the Workers' cached file descriptors (before fsync/rename by the coordinator). */
  async closeFiles(): Promise<void> {
    await Promise.all(this.workers.map((_, i) => this.post(i, "close", {})));
  }

  terminate(): void {
    clearTimeout(this.startTimer);
    for (const w of this.workers) w.terminate();
    this.failAll(new BackyError("data workers stopped"));
    this.workers = [];
  }
}

/** A Worker's error as the coordinator's: damaged blocks stay recognisable, ENOSPC is named. */
function workerError(msg: { error: string; code?: string; name?: string }): BackyError {
  if (msg.name === "DamagedBlockError") return new DamagedBlockError(msg.error, "");
  return new BackyError(
    msg.code === "ENOSPC" && !/no space left/i.test(msg.error)
      ? `No space left on device: ${msg.error}`
      : msg.error,
  );
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
