/**
 * Blocks of a cow revision (design D2): a sparse raw image, created as a reflink clone of
 * its parent, so a block the new revision shares with the parent is already there.
 */
import * as fs from "node:fs";
import { hex, sameDigest } from "../repo/index_file.ts";
import { isZero, sha256 } from "../util/bytes.ts";
import { PositionalWriter, preadFull, pwriteAll } from "../util/directio.ts";
import { alignedBuffer } from "../util/native/buffer.ts";
import { punchHole } from "../util/native/fallocate.ts";
import { type BlockStore, DamagedBlockError } from "./block_store.ts";

export class CowBlocks implements BlockStore {
  #readFd: number | undefined;
  #writer: PositionalWriter;
  #buf: Uint8Array | undefined;

  constructor(readonly image: string) {
    this.#writer = new PositionalWriter(image);
  }

  #read(offset: number, length: number, into?: Uint8Array): Uint8Array {
    this.#readFd ??= fs.openSync(this.image, "r");
    let target = into && into.length >= length ? into : this.#buf;
    if (!target || target.length < length) target = this.#buf = alignedBuffer(length);
    return preadFull(this.#readFd, target, length, offset);
  }

  get(offset: number, length: number, digest: Uint8Array | undefined, into?: Uint8Array) {
    const data = this.#read(offset, length, into);
    if (digest !== undefined && !sameDigest(sha256(data), digest)) {
      throw new DamagedBlockError(
        `image ${this.image} is corrupt at offset ${offset}: block does not match its index`,
        `${this.image}@${offset}`,
      );
    }
    return data;
  }

  check(offset: number, length: number, digest: Uint8Array | null) {
    const data = this.#read(offset, length);
    if (digest === null) {
      return isZero(data) ? { ok: true } : { ok: false, reason: "expected zeros, found data" };
    }
    const got = sha256(data);
    if (sameDigest(got, digest)) return { ok: true };
    return {
      ok: false,
      reason: `stored ${hex(got).slice(0, 16)}…, source ${hex(digest).slice(0, 16)}…`,
    };
  }

  hasParentBlock(): boolean {
    return true; // the clone carries the parent's block
  }

  parentBytes(offset: number, length: number, digest: Uint8Array, parentLength: number) {
    // Not yet written in this run, so the clone's bytes here are the parent's.
    const data = this.#read(offset, length);
    if (parentLength <= length && !sameDigest(sha256(data.subarray(0, parentLength)), digest)) {
      throw new DamagedBlockError(
        `parent image block at offset ${offset} (cloned into ${this.image}) does not match ` +
          "its index",
        `${this.image}@${offset}`,
      );
    }
    return data;
  }

  write(offset: number, data: Uint8Array): number {
    this.#writer.write(data, offset);
    return data.length;
  }

  zero(offset: number, length: number, parentHadData: boolean): void {
    if (!parentHadData) return; // already a hole
    // The clone carries the parent's data here: make it a hole again.
    const fd = this.#writer.fd();
    if (!punchHole(fd, offset, length)) pwriteAll(fd, new Uint8Array(length), offset);
  }

  close(): void {
    if (this.#readFd !== undefined) fs.closeSync(this.#readFd);
    this.#readFd = undefined;
    this.#writer.close();
  }
}
