/**
 * Streaming parser for `rbd export-diff` output, formats `rbd diff v1\n` and `rbd diff v2\n`
 * (spec §3.4, Ceph doc/dev/rbd-diff.rst).
 *
 * The input is read chunk by chunk with arbitrary boundaries; a `w` record is never held in
 * memory as a whole but handed out as pieces of at most `maxPiece` bytes, so memory use is
 * bounded by one piece whatever the size of the diff.
 */
import { BackyError } from "../../util/errors.ts";

export type DiffRecord =
  | { type: "from"; name: string }
  | { type: "to"; name: string }
  | { type: "size"; size: number }
  /** One piece of a `w` record; `offset` is absolute in the image. */
  | { type: "data"; offset: number; data: Uint8Array }
  | { type: "zero"; offset: number; length: number }
  | { type: "end" };

export interface ParseDiffOptions {
  /** Largest `data` piece handed out, in bytes (default 4 MiB). */
  maxPiece?: number;
  /**
   * Hand out `data` pieces as views of the input as it arrives (sizes vary with the input's
   * chunking, up to maxPiece) instead of pieces of exactly maxPiece bytes: nothing is ever
   * copied, for consumers that do not care about piece boundaries.
   */
  views?: boolean;
}

export class DiffFormatError extends BackyError {
  constructor(message: string) {
    super(message);
    this.name = "DiffFormatError";
  }
}

export const DEFAULT_MAX_PIECE = 4 * 1024 * 1024;

const HEADER_LENGTH = 12;
const HEADER_V1 = "rbd diff v1\n";
const HEADER_V2 = "rbd diff v2\n";

/**
 * Snapshot names are short in practice; the cap keeps a corrupt length field from making us
 * buffer up to 2 GiB before noticing.
 */
const MAX_NAME_LENGTH = 1024 * 1024;

const EMPTY = new Uint8Array(0);
const nameDecoder = new TextDecoder("utf-8", { fatal: true });

/** Format version announced by the first 12 bytes of a diff, or null if it is not a diff. */
export function diffHeaderVersion(bytes: Uint8Array): 1 | 2 | null {
  if (bytes.length < HEADER_LENGTH) return null;
  for (const [version, header] of [[1, HEADER_V1], [2, HEADER_V2]] as const) {
    let match = true;
    for (let i = 0; i < HEADER_LENGTH; i++) {
      if (bytes[i] !== header.charCodeAt(i)) {
        match = false;
        break;
      }
    }
    if (match) return version;
  }
  return null;
}

/** Python's `repr()` of a bytes object: the error text backy 2.1 users know. */
export function pythonBytesRepr(bytes: Uint8Array): string {
  const SQ = 0x27, DQ = 0x22;
  // Python switches to double quotes when that avoids escaping a single quote.
  const quote = bytes.includes(SQ) && !bytes.includes(DQ) ? DQ : SQ;
  let out = "b" + String.fromCharCode(quote);
  for (const b of bytes) {
    if (b === quote || b === 0x5c) out += "\\" + String.fromCharCode(b);
    else if (b === 0x09) out += "\\t";
    else if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b < 0x20 || b >= 0x7f) out += "\\x" + b.toString(16).padStart(2, "0");
    else out += String.fromCharCode(b);
  }
  return out + String.fromCharCode(quote);
}

/** A tag byte as shown in messages; non-printable bytes would garble a log line. */
function tagText(byte: number): string {
  if (byte < 0) return "";
  if (byte >= 0x20 && byte < 0x7f) return String.fromCharCode(byte);
  return "\\x" + byte.toString(16).padStart(2, "0");
}

/**
 * Pull-based byte reader over an async iterable of chunks. Hands out views into the input
 * chunks when a request fits in one (no copy) and copies exactly once otherwise.
 */
class ChunkReader {
  #it: AsyncIterator<Uint8Array>;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  /** Stream offset of #chunk[0]. */
  #base = 0;
  #done = false;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.#it = input[Symbol.asyncIterator]();
  }

  /** Bytes consumed so far: the stream offset of the next byte. */
  get position(): number {
    return this.#base + this.#pos;
  }

  /** Makes sure unread bytes are buffered; false at end of stream. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#chunk.length) {
      if (this.#done) return false;
      let result: IteratorResult<Uint8Array>;
      try {
        result = await this.#it.next();
      } catch (e) {
        // A throwing iterator is finished; don't call return() on it later.
        this.#done = true;
        throw e;
      }
      if (result.done) {
        this.#done = true;
        return false;
      }
      this.#base += this.#chunk.length;
      this.#chunk = result.value;
      this.#pos = 0;
    }
    return true;
  }

  /** Next byte, or -1 at end of stream. */
  async byte(): Promise<number> {
    if (!(await this.#fill())) return -1;
    return this.#chunk[this.#pos++];
  }

  /** Up to `max` (> 0) bytes without copying; empty at end of stream. */
  async upTo(max: number): Promise<Uint8Array> {
    if (!(await this.#fill())) return EMPTY;
    const n = Math.min(max, this.#chunk.length - this.#pos);
    const view = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return view;
  }

  /** Exactly `n` bytes, fewer only at end of stream. */
  async exact(n: number): Promise<Uint8Array> {
    if (n === 0 || !(await this.#fill())) return EMPTY;
    if (this.#chunk.length - this.#pos >= n) {
      const view = this.#chunk.subarray(this.#pos, this.#pos + n);
      this.#pos += n;
      return view;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const part = await this.upTo(n - filled);
      if (part.length === 0) return out.subarray(0, filled);
      out.set(part, filled);
      filled += part.length;
    }
    return out;
  }

  /** Releases the input (cancels a ReadableStream) unless it already ended. */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    await this.#it.return?.();
  }
}

/**
 * Parses an `rbd export-diff` stream into records. `w` records come out as consecutive
 * `data` pieces of exactly `maxPiece` bytes (the last one shorter), so piece boundaries do
 * not depend on how the input was chunked; a zero-length `w` yields nothing. A `data` piece
 * is a view into an input chunk or a fresh buffer and is never modified afterwards.
 *
 * Stops at the `e` record without reading further (anything after it is ignored) and
 * releases the input. Malformed input throws DiffFormatError.
 */
export async function* parseDiff(
  input: AsyncIterable<Uint8Array>,
  opts: ParseDiffOptions = {},
): AsyncGenerator<DiffRecord> {
  const maxPiece = opts.maxPiece ?? DEFAULT_MAX_PIECE;
  if (!Number.isSafeInteger(maxPiece) || maxPiece < 1) {
    throw new RangeError(`maxPiece must be a positive integer, got ${maxPiece}`);
  }
  const reader = new ChunkReader(input);
  try {
    const header = await reader.exact(HEADER_LENGTH);
    const version = diffHeaderVersion(header);
    if (version === null) {
      throw new DiffFormatError(`Unexpected header: ${pythonBytesRepr(header)}`);
    }

    let tag = "";
    const truncated = () =>
      new DiffFormatError(
        `Unexpected end of diff stream in "${tag}" record at byte ${reader.position}`,
      );
    const bytes = async (n: number) => {
      const b = await reader.exact(n);
      if (b.length < n) throw truncated();
      return b;
    };
    const u64 = async (what: string) => {
      const b = await bytes(8);
      const dv = new DataView(b.buffer, b.byteOffset, 8);
      const high = dv.getUint32(4, true);
      // Offsets and sizes are JS numbers; beyond 2^53 they would silently lose precision.
      if (high >= 0x200000) {
        throw new DiffFormatError(
          `${what} in "${tag}" record at byte ${reader.position - 8} exceeds 2^53: ` +
            dv.getBigUint64(0, true),
        );
      }
      return high * 0x1_0000_0000 + dv.getUint32(0, true);
    };
    const checkLength = (recordLength: number | undefined, expected: number) => {
      if (recordLength !== undefined && recordLength !== expected) {
        throw new DiffFormatError(
          `Invalid length ${recordLength} of "${tag}" record (expected ${expected})`,
        );
      }
    };
    const name = async (recordLength: number | undefined) => {
      const b = await bytes(4);
      const length = new DataView(b.buffer, b.byteOffset, 4).getInt32(0, true);
      if (length < 0 || length > MAX_NAME_LENGTH) {
        throw new DiffFormatError(
          `Invalid snapshot name length ${length} in "${tag}" record at byte ${
            reader.position - 4
          }`,
        );
      }
      // Checked before reading so a bad v2 length is reported, not a truncation.
      checkLength(recordLength, 4 + length);
      try {
        return nameDecoder.decode(await bytes(length));
      } catch (e) {
        if (e instanceof DiffFormatError) throw e;
        throw new DiffFormatError(`Snapshot name in "${tag}" record is not valid UTF-8`);
      }
    };
    const range = (offset: number, length: number) => {
      if (offset + length > Number.MAX_SAFE_INTEGER) {
        throw new DiffFormatError(
          `Range ${offset}+${length} in "${tag}" record exceeds 2^53`,
        );
      }
    };

    let previous: string | null = null;
    let inData = false;
    for (;;) {
      const tagByte = await reader.byte();
      tag = tagText(tagByte);
      const known = tagByte >= 0 && "fstwze".includes(tag);
      // v2 lets readers skip unknown records thanks to their length field; v1 can't.
      if (!known && (version === 1 || tagByte < 0)) {
        throw new DiffFormatError(
          `Got invalid record type "${tag}". Previous record: ${previous ?? "None"}`,
        );
      }
      if (tag === "e") {
        // v2 also ends with the bare tag, no length field (rbd-diff.rst).
        yield { type: "end" };
        return;
      }
      const recordLength = version === 2 ? await u64("Record length") : undefined;
      if (inData && (tag === "f" || tag === "t" || tag === "s")) {
        throw new DiffFormatError(
          `Metadata record "${tag}" after data records. Previous record: ${previous}`,
        );
      }
      switch (tag) {
        case "f":
        case "t": {
          yield { type: tag === "f" ? "from" : "to", name: await name(recordLength) };
          break;
        }
        case "s":
          checkLength(recordLength, 8);
          yield { type: "size", size: await u64("Size") };
          break;
        case "w": {
          inData = true;
          const offset = await u64("Offset");
          const length = await u64("Length");
          range(offset, length);
          checkLength(recordLength, 16 + length);
          for (let done = 0; done < length;) {
            const want = Math.min(maxPiece, length - done);
            const data = opts.views ? await reader.upTo(want) : await bytes(want);
            if (data.length === 0) throw truncated();
            yield { type: "data", offset: offset + done, data };
            done += data.length;
          }
          break;
        }
        case "z": {
          inData = true;
          checkLength(recordLength, 16);
          const offset = await u64("Offset");
          const length = await u64("Length");
          range(offset, length);
          yield { type: "zero", offset, length };
          break;
        }
        default:
          // Unknown v2 record (e.g. a newer Ceph's metadata): skip its payload unread.
          for (let left = recordLength!; left > 0;) {
            const part = await reader.upTo(left);
            if (part.length === 0) throw truncated();
            left -= part.length;
          }
      }
      previous = tag;
    }
  } finally {
    await reader.close();
  }
}
