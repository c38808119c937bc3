/** A counting semaphore whose limit can change while it is in use (worker-limit reloads). */
export class Semaphore {
  private waiters: (() => void)[] = [];
  busy = 0;

  constructor(public limit: number) {}

  async acquire(signal?: AbortSignal): Promise<void> {
    while (this.busy >= this.limit) {
      if (signal?.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal?.removeEventListener("abort", wake);
          resolve();
        };
        this.waiters.push(wake);
        signal?.addEventListener("abort", wake, { once: true });
      });
    }
    if (signal?.aborted) throw signal.reason;
    this.busy++;
  }

  release(): void {
    this.busy--;
    this.wakeAll();
  }

  setLimit(limit: number): void {
    this.limit = limit;
    this.wakeAll();
  }

  private wakeAll() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
