/**
 * The `rbd` command, wrapped (design D12: backy talks to Ceph only through it).
 *
 * Every call is an argv array run with `Deno.Command` (never a shell). The binary comes from
 * `BACKY_RBD` (default `rbd`); CEPH_CONF / CEPH_ARGS reach rbd through the inherited
 * environment. JSON output is requested with `--format=json`. `--no-progress` is passed to
 * every subcommand that accepts it: rbd 16 (Pacific) rejects it ("unrecognised option") on
 * info, snap ls, snap protect and the like, so it cannot be given globally as backy 2.1 did.
 */
import { BackyError, errorMessage } from "../../util/errors.ts";
import { run, type RunResult } from "../../util/proc.ts";
import {
  closeFd,
  openPipe,
  pipeChunks,
  type PipedChild,
  spawnPiped,
  writeAll,
} from "../../util/pipe.ts";

/** `rbd info --format=json` of an image or snapshot, the fields backy uses. */
export interface RbdImageInfo {
  name: string;
  id?: string;
  /** Bytes; of the snapshot when a snapshot was asked for. */
  size: number;
  objectSize: number;
  snapshotCount?: number;
  format?: number;
  features: string[];
  /** Only present when info was asked for a snapshot. */
  protected?: boolean;
}

/** One entry of `rbd snap ls --format=json`. */
export interface RbdSnapshot {
  name: string;
  id: number;
  size: number;
  protected: boolean;
  timestamp?: string;
}

/** A running `rbd export`/`export-diff` whose data arrives on `stdout`. */
export interface RbdStream {
  /**
   * rbd's output through a big pipe (util/pipe.ts), as views of reused buffers: a chunk is
   * valid until the next one is requested (copy what you keep).
   */
  stdout: AsyncIterable<Uint8Array>;
  /**
   * Settles when rbd has exited: rejects with a BackyError (rbd's stderr) on a non-zero exit
   * or after kill(). Always await it after consuming stdout: a stream that ends early looks
   * like a complete one, only the exit status tells them apart (backy 2.5.2 fixed exactly
   * that bug).
   */
  done: Promise<void>;
  /** Abort rbd (SIGTERM). `done` then rejects. No-op once rbd has exited. */
  kill(): void;
}

/**
 * Hands data to a running `rbd import`/`import-diff`; resolves once rbd's pipe took all of it,
 * so the caller may reuse the buffer then. Throws when rbd stopped reading (it failed).
 */
export type Feed = (data: Uint8Array) => Promise<void>;

/** rbd exited non-zero. `code` is its exit status, `stderr` the (bounded) raw text. */
export class RbdError extends BackyError {
  constructor(
    message: string,
    readonly args: readonly string[],
    readonly code: number,
    readonly stderr: string,
  ) {
    super(message);
    this.name = "RbdError";
  }
}

/** `snap rm` refused because the snapshot is protected; callers warn and go on (2.5.0). */
export class SnapshotProtectedError extends RbdError {
  constructor(
    readonly image: string,
    readonly snapshot: string,
    args: readonly string[],
    code: number,
    stderr: string,
  ) {
    super(
      `rbd snapshot ${image}@${snapshot} is protected and cannot be removed`,
      args,
      code,
      stderr,
    );
    this.name = "SnapshotProtectedError";
  }
}

export interface RbdOptions {
  /** Path of the rbd binary; default `$BACKY_RBD`, else `rbd` from PATH. */
  binary?: string;
  /** Extra environment for rbd (e.g. CEPH_CONF), merged over the inherited one. */
  env?: Record<string, string>;
}

/** Subcommands that accept `--no-progress` (checked against `rbd help` of rbd 16). */
const NO_PROGRESS = new Set([
  "create",
  "rm",
  "resize",
  "snap create",
  "snap rm",
  "snap purge",
  "export",
  "export-diff",
  "import",
  "import-diff",
]);

/** ENOENT: what rbd exits with for a missing pool, image or snapshot. */
const EXIT_DOES_NOT_EXIST = 2;
/** rbd's message when it cannot reach the cluster at all (exit status 2 as well). */
const NO_CLUSTER = /couldn't connect to the cluster/;
/** EBUSY: `snap rm` of a protected snapshot. */
const EXIT_BUSY = 16;

/** How much of a streaming command's stderr is kept (its tail holds the error). */
const STDERR_LIMIT = 16 * 1024;

export class Rbd {
  readonly binary: string;
  readonly #env?: Record<string, string>;
  #wholeObject?: Promise<boolean>;

  constructor(options: RbdOptions = {}) {
    this.binary = options.binary ?? Deno.env.get("BACKY_RBD") ?? "rbd";
    this.#env = options.env;
  }

  /** Whether an image (`POOL/IMAGE`) or snapshot (`POOL/IMAGE@SNAP`) exists. */
  async imageExists(spec: string): Promise<boolean> {
    return (await this.info(spec)) !== undefined;
  }

  /** Image or snapshot info; undefined when it (or its pool) does not exist. */
  async info(spec: string): Promise<RbdImageInfo | undefined> {
    const out = await this.#run(["info", "--format=json", spec], { missingOk: true });
    if (out === undefined) return undefined;
    const j = parseJson(out, "info", spec) as Record<string, unknown>;
    return {
      name: String(j.name),
      id: j.id === undefined ? undefined : String(j.id),
      size: Number(j.size),
      objectSize: Number(j.object_size),
      snapshotCount: j.snapshot_count === undefined ? undefined : Number(j.snapshot_count),
      format: j.format === undefined ? undefined : Number(j.format),
      features: Array.isArray(j.features) ? j.features.map(String) : [],
      protected: j.protected === undefined ? undefined : toBool(j.protected),
    };
  }

  async snapCreate(image: string, snap: string): Promise<void> {
    await this.#run(["snap", "create", `${image}@${snap}`]);
  }

  async snapList(image: string): Promise<RbdSnapshot[]> {
    const out = await this.#run(["snap", "ls", "--format=json", image]);
    const list = parseJson(out!, "snap ls", image);
    if (!Array.isArray(list)) {
      throw new BackyError(
        `rbd snap ls ${image}: expected a JSON list, got: ${out!.slice(0, 200)}`,
      );
    }
    return list.map((s: Record<string, unknown>) => ({
      name: String(s.name),
      id: Number(s.id),
      size: Number(s.size),
      protected: toBool(s.protected),
      timestamp: s.timestamp === undefined ? undefined : String(s.timestamp),
    }));
  }

  /** Throws SnapshotProtectedError for a protected snapshot, RbdError otherwise. */
  async snapRemove(image: string, snap: string): Promise<void> {
    const spec = `${image}@${snap}`;
    try {
      await this.#run(["snap", "rm", spec]);
    } catch (e) {
      if (e instanceof RbdError && e.code === EXIT_BUSY && /protected/i.test(e.stderr)) {
        throw new SnapshotProtectedError(image, snap, e.args, e.code, e.stderr);
      }
      throw e;
    }
  }

  async snapProtect(image: string, snap: string): Promise<void> {
    await this.#run(["snap", "protect", `${image}@${snap}`]);
  }

  async snapUnprotect(image: string, snap: string): Promise<void> {
    await this.#run(["snap", "unprotect", `${image}@${snap}`]);
  }

  /** Removes all unprotected snapshots of the image. */
  async snapPurge(image: string): Promise<void> {
    await this.#run(["snap", "purge", image]);
  }

  /**
   * Whether this rbd knows `export-diff --whole-object` (Jewel+). Asks `rbd help export-diff`
   * rather than parsing `ceph -v`, which broke on "Development" builds (spec 9). Cached.
   */
  supportsWholeObject(): Promise<boolean> {
    this.#wholeObject ??= (async () => {
      // `rbd help` needs no cluster; its complaints about a missing ceph.conf go to stderr
      const out = await this.#spawnOutput(["help", "export-diff"]);
      return out.code === 0 && out.stdout.includes("--whole-object");
    })();
    return this.#wholeObject;
  }

  /** `rbd export-diff [--from-snap F] [--whole-object] IMAGE@SNAP -`, streamed. */
  exportDiff(
    image: string,
    snap: string,
    fromSnap: string | undefined,
    options: { wholeObject?: boolean } = {},
  ): RbdStream {
    const args = ["export-diff"];
    if (fromSnap !== undefined) args.push("--from-snap", fromSnap);
    if (options.wholeObject) args.push("--whole-object");
    args.push(`${image}@${snap}`, "-");
    return this.#stream(args, `${image}@${snap}`);
  }

  /** `rbd export SPEC -` (raw image bytes), streamed. */
  export(spec: string): RbdStream {
    return this.#stream(["export", spec, "-"], spec);
  }

  /**
   * `rbd import --image-format 2 - TARGET`, fed by `produce` through `feed`. If `produce`
   * fails, the short image rbd then completes is removed again (rbd import refuses existing
   * targets, so an image it created successfully is ours) and produce's error is thrown.
   */
  async importFrom(
    target: string,
    produce: (feed: Feed) => Promise<void>,
    options: { imageFormat?: 1 | 2 } = {},
  ): Promise<void> {
    await this.#pipeInto(
      ["import", "--image-format", String(options.imageFormat ?? 2), "-", target],
      target,
      produce,
      true,
    );
  }

  /**
   * `rbd import-diff - IMAGE` fed by `produce` (creates the diff's end snapshot, if any).
   * A failing producer truncates the diff, which rbd rejects (exit 74, no `e` record), but
   * the writes before it stay in IMAGE.
   */
  async importDiffFrom(image: string, produce: (feed: Feed) => Promise<void>): Promise<void> {
    await this.#pipeInto(["import-diff", "-", image], image, produce, false);
  }

  async create(image: string, sizeBytes: number): Promise<void> {
    await this.#run(["create", "--size", `${sizeBytes}B`, image]);
  }

  async resize(image: string, sizeBytes: number, options: { allowShrink?: boolean } = {}) {
    const args = ["resize", "--size", `${sizeBytes}B`];
    if (options.allowShrink) args.push("--allow-shrink");
    await this.#run([...args, image]);
  }

  async rename(from: string, to: string): Promise<void> {
    await this.#run(["rename", from, to]);
  }

  /** Removes an image (fails while it has snapshots). */
  async remove(image: string): Promise<void> {
    await this.#run(["rm", image]);
  }

  // ------------------------------------------------------------------ internals

  /** Inserts `--no-progress` after the subcommand words where rbd accepts it. */
  #argv(args: string[]): string[] {
    const words = args[0] === "snap" ? 2 : 1;
    const command = args.slice(0, words).join(" ");
    return NO_PROGRESS.has(command)
      ? [...args.slice(0, words), "--no-progress", ...args.slice(words)]
      : args;
  }

  #notFound(e: unknown): BackyError {
    const why = e instanceof BackyError && e.cause ? e.cause : e;
    return new BackyError(
      `cannot run rbd (${this.binary}): ${errorMessage(why)}; install ceph-common or set BACKY_RBD`,
      { cause: e },
    );
  }

  async #spawnOutput(args: string[]): Promise<RunResult> {
    try {
      return await run(this.binary, args, { env: this.#env });
    } catch (e) {
      throw this.#notFound(e);
    }
  }

  /**
   * Runs a short rbd command and returns its stdout. With `missingOk`, exit 2 ("does not
   * exist", ENOENT) returns undefined instead of throwing.
   */
  async #run(args: string[], options: { missingOk?: boolean } = {}): Promise<string | undefined> {
    const argv = this.#argv(args);
    const out = await this.#spawnOutput(argv);
    if (out.code === 0) return out.stdout;
    const stderr = out.stderr;
    // rbd also exits 2 when it finds no cluster (e.g. a wrong CEPH_CONF); that must not read
    // as "no such image", or a misconfiguration would silently turn into a full backup
    if (
      options.missingOk && out.code === EXIT_DOES_NOT_EXIST && !NO_CLUSTER.test(stderr)
    ) return undefined;
    throw this.#error(argv, out.code, stderr);
  }

  #error(argv: readonly string[], code: number, stderr: string, what = "failed"): RbdError {
    const command = argv.filter((a) => !a.startsWith("--no-progress")).join(" ");
    return new RbdError(
      `rbd ${command} ${what} (exit ${code}): ${summarizeStderr(stderr)}`,
      argv,
      code,
      stderr,
    );
  }

  /**
   * Starts rbd with one end of a new big pipe (see util/pipe.ts) as its stdin or stdout and
   * returns the other end. Its `status` rejects with the "cannot run rbd" error when rbd
   * could not be started.
   */
  #spawnPiped(argv: string[], end: "stdin" | "stdout"): { child: PipedChild; fd: number } {
    const pipe = openPipe();
    const [theirs, ours] = end === "stdin"
      ? [pipe.readFd, pipe.writeFd]
      : [pipe.writeFd, pipe.readFd];
    let child: PipedChild;
    try {
      child = spawnPiped(this.binary, argv, {
        [end]: theirs,
        env: this.#env,
        stderrLimit: STDERR_LIMIT,
      });
    } catch (e) {
      closeFd(ours);
      throw this.#notFound(e);
    }
    const status = child.status.catch((e) => {
      throw this.#notFound(e);
    });
    status.catch(() => {}); // surfaced where awaited
    return { child: { ...child, status }, fd: ours };
  }

  #stream(args: string[], subject: string): RbdStream {
    const argv = this.#argv(args);
    let child: PipedChild;
    let fd: number;
    try {
      ({ child, fd } = this.#spawnPiped(argv, "stdout"));
    } catch (err) {
      const done = Promise.reject(err);
      done.catch(() => {});
      return { stdout: failing(err), done, kill() {} };
    }
    let exited = false;
    let killed = false;
    const done = (async () => {
      const code = await child.status.finally(() => {
        exited = true;
      });
      const text = await child.stderr;
      if (killed) throw this.#error(argv, code, text, `for ${subject} was aborted`);
      if (code !== 0) throw this.#error(argv, code, text);
    })();
    // Mark as handled: a consumer whose stdout read failed may throw before awaiting done,
    // which must not turn into an unhandled rejection that kills the process.
    done.catch(() => {});
    async function* output() {
      yield* pipeChunks(fd);
      // At the end: if rbd could not even be started, the output must not look complete.
      await child.status;
    }
    return {
      stdout: output(),
      done,
      kill() {
        if (exited) return;
        killed = true;
        child.kill();
      },
    };
  }

  async #pipeInto(
    args: string[],
    subject: string,
    produce: (feed: Feed) => Promise<void>,
    removeOnAbort: boolean,
  ): Promise<void> {
    const argv = this.#argv(args);
    const { child, fd } = this.#spawnPiped(argv, "stdin");
    let sinkBroken = false;
    const feed: Feed = async (data) => {
      if (sinkBroken) throw new BackyError(`rbd ${argv[0]} stopped reading its input`);
      try {
        await writeAll(fd, data);
      } catch (e) {
        // rbd closed its stdin (it failed); its exit status and stderr say why
        sinkBroken = true;
        throw e;
      }
    };
    let sourceError: unknown;
    let sourceFailed = false;
    try {
      await produce(feed);
    } catch (e) {
      if (!sinkBroken) {
        sourceError = e;
        sourceFailed = true;
      }
    }
    // End of input, also after a source failure: rbd then completes a short image, removed
    // below. Killing rbd instead leaves a stale watcher on the image that blocks `rbd rm`.
    closeFd(fd);
    const code = await child.status;
    const text = await child.stderr;
    if (sourceFailed) {
      let leftover = `${subject} may be left incomplete`;
      if (code === 0 && removeOnAbort) {
        // rbd succeeded, so it created the image itself: it is ours to remove
        const rm = await this.#spawnOutput(this.#argv(["rm", subject]));
        leftover = rm.code === 0
          ? `incomplete ${subject} removed`
          : `incomplete ${subject} left behind (rbd rm: ${summarizeStderr(rm.stderr)})`;
      }
      throw new BackyError(
        `rbd ${argv.join(" ")} aborted, input failed: ${errorMessage(sourceError)}; ${leftover}`,
        { cause: sourceError },
      );
    }
    if (code !== 0) throw this.#error(argv, code, text);
    if (sinkBroken) throw this.#error(argv, code, text, "closed its input early");
  }
}

function toBool(v: unknown): boolean {
  return v === true || v === "true";
}

function parseJson(text: string, command: string, subject: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new BackyError(
      `rbd ${command} ${subject}: unparsable JSON output: ${text.slice(0, 200)}`,
    );
  }
}

/** Ceph's own log lines: `2026-11-27T01:22:08.439+0000 7f3d737fe6c0 -1 librbd::...`. */
const CEPH_LOG_LINE = /^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d{4} [0-9a-f]+ +-?\d+ /;

/**
 * rbd's stderr as one line: its own `rbd: ...` lines when there are any (Ceph's debug log
 * lines around them are noise), else everything; bounded.
 */
export function summarizeStderr(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  if (lines.length === 0) return "(no error output)";
  const own = lines.filter((l) => l.startsWith("rbd:")).map((l) => l.slice(4).trim());
  const plain = lines.filter((l) => !CEPH_LOG_LINE.test(l));
  const chosen = own.length > 0 ? own : plain.length > 0 ? plain : lines;
  const text = chosen.join("; ");
  return text.length > 500 ? `${text.slice(0, 497)}...` : text;
}

/** An output that fails on first read (rbd could not be started). */
function failing(e: unknown): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(e) }) };
}
