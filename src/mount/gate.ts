/**
 * At most `limit` reads in progress, the others wait their turn (first come, first served).
 * Each read pins at most two blocks (a request is at most 1 MiB, a block 4 MiB), so this
 * bounds the mount's memory however many processes read at once; a waiting read holds none.
 */
export class Gate {
  #busy = 0;
  #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {}

  /** Reads in progress. */
  get busy(): number {
    return this.#busy;
  }

  /** Waits for a turn; call the returned function (once) when done. */
  async enter(): Promise<() => void> {
    if (this.#busy >= this.limit) await new Promise<void>((r) => this.#waiting.push(r));
    else this.#busy++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      const next = this.#waiting.shift();
      if (next) next(); // the turn passes on: busy stays the same
      else this.#busy--;
    };
  }
}
