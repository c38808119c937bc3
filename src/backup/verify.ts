/**
 * Verification of a new revision before it counts (design D11): every block read back
 * through the store and compared with the digests taken from the source in this run
 * (file sources), or a random 1 % of blocks read again from the source (Ceph snapshots)
 * and compared both with the index and with the store.
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { isZero, sha256 } from "../util/bytes.ts";
import { logger } from "../util/log.ts";
import { BLOCK_SIZE, type BlockIndex, sameDigest } from "../repo/index_file.ts";
import type { DamagedBlock, StoreRef } from "../store/store.ts";
import type { SourceRun } from "../sources/source.ts";
import { pipeline, type WorkerPool } from "./pool.ts";

const log = logger("verify");

/** Sampled verification stops after this long and counts as passed (spec 3.6). */
const VERIFY_CAP_MS = 5 * 60 * 1000;

export class VerificationError extends BackyError {}

/** A block whose stored content does not match the index. */
export interface Mismatch {
  block: number;
  reason: string;
}

/**
 * Blocks of the revision `blocks` (default: all), read from the store and checked against
 * the index; returns those that do not match (unreadable counts as not matching).
 */
export async function checkBlocks(
  pool: WorkerPool,
  index: BlockIndex,
  ref: StoreRef,
  blocks?: number[],
  onBlock?: (bytes: number) => void,
): Promise<Mismatch[]> {
  const list = blocks ?? [...Array(index.count).keys()];
  const out: Mismatch[] = [];
  await pipeline(list.length, pool.size * 3, (k) => {
    const i = list[k];
    return pool.check({
      offset: i * BLOCK_SIZE,
      length: index.blockLength(i),
      store: ref,
      digest: index.isZero(i) ? null : index.digest(i).slice(),
    }).catch((e) => ({ ok: false, reason: errorMessage(e) }));
  }, (k, r) => {
    onBlock?.(index.blockLength(list[k]));
    if (!r.ok) out.push({ block: list[k], reason: r.reason ?? "does not match" });
  });
  return out;
}

/** The blocks of `bad` that hold data (zero blocks have no chunk to move aside). */
export function damagedBlocks(index: BlockIndex, bad: Mismatch[]): DamagedBlock[] {
  return bad.filter((m) => !index.isZero(m.block)).map((m) => ({
    digest: index.digest(m.block).slice(),
    length: index.blockLength(m.block),
    offset: m.block * BLOCK_SIZE,
  }));
}

/** One line per damaged block, as status, verify and the logs name them. */
export function describe(m: Mismatch): string {
  return `block ${m.block} (offset ${m.block * BLOCK_SIZE}): ${m.reason}`;
}

/** The error of a backup whose verification failed (after quarantining what it could). */
export function verificationFailed(
  id: string,
  index: BlockIndex,
  bad: Mismatch[],
  moved: string[],
): VerificationError {
  return new VerificationError(
    `verification of revision ${id} failed: ${bad.length} of ${index.count} blocks ` +
      `differ from the source; first: ${describe(bad[0])}` +
      (moved.length
        ? `; moved ${moved.length} corrupt chunk file(s) aside to *.corrupt, ` +
          "the next backup stores them anew"
        : ""),
  );
}

/**
 * A random 1 % of the blocks (at least one) read from the source and compared with the
 * index and the store; also the total size. Random order, so a time cap still spreads.
 * Returns how many blocks were checked.
 */
export async function verifySample(
  pool: WorkerPool,
  index: BlockIndex,
  ref: StoreRef,
  sample: NonNullable<SourceRun["sample"]>,
  id: string,
): Promise<number> {
  let reader;
  try {
    reader = await sample.open();
  } catch (e) {
    throw new BackyError(`cannot verify revision ${id}: ${errorMessage(e)}`);
  }
  if (reader.size !== index.size) {
    throw new VerificationError(
      `verification of revision ${id} failed: ${sample.against} has ${reader.size} bytes, ` +
        `revision ${index.size}`,
    );
  }
  const count = index.count;
  if (count === 0) return 0;
  const picked = sampleIndices(count, Math.max(1, Math.floor(count * 0.01)));
  const started = Date.now();
  let checked = 0;
  for (const i of picked) {
    if (Date.now() - started > VERIFY_CAP_MS) {
      log.warning("Verification time cap reached", { id, checked, planned: picked.length });
      break;
    }
    const length = index.blockLength(i);
    const data = await reader.read(i * BLOCK_SIZE, length);
    const digest = isZero(data) ? null : sha256(data);
    const expected = index.isZero(i) ? null : index.digest(i);
    const indexOk = digest === null
      ? expected === null
      : expected !== null && sameDigest(digest, expected);
    // Only a block the index got right is read back: the source's digest may name no
    // chunk at all, and a missing chunk is a verification failure, not a crash.
    const stored = indexOk
      ? await pool.check({ offset: i * BLOCK_SIZE, length, store: ref, digest })
        .catch((e) => ({ ok: false, reason: errorMessage(e) }))
      : { ok: false, reason: "the revision's index does not match" };
    if (!indexOk || !stored.ok) {
      throw new VerificationError(
        `verification of revision ${id} failed: block ${i} (offset ${i * BLOCK_SIZE}) ` +
          `differs from ${sample.against}${stored.reason ? `: ${stored.reason}` : ""}`,
      );
    }
    checked++;
  }
  return checked;
}

/** `k` distinct indices from [0, n), in random order (partial Fisher-Yates). */
export function sampleIndices(n: number, k: number): number[] {
  const picked = new Map<number, number>();
  const out: number[] = [];
  for (let i = 0; i < Math.min(k, n); i++) {
    const j = i + Math.floor(Math.random() * (n - i));
    const vj = picked.get(j) ?? j;
    picked.set(j, picked.get(i) ?? i);
    out.push(vj);
  }
  return out;
}
