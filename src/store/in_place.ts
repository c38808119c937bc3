/**
 * Room for decoding a chunk inside the buffer its block is read into (chunkfile.ts
 * readChunk): zstd decodes a frame in place when the frame lies at the end of an output
 * buffer that is larger than the content by zstd's margin (lib/zstd.h,
 * ZSTD_decompressionMargin). Its own small module: the mount's reader sizes its buffers by
 * it without loading the stores.
 */
import { BLOCK_SIZE } from "../repo/index_file.ts";
import { ZSTD_BLOCK_MAX } from "../util/native/zstd.ts";

/** zstd's ZSTD_DECOMPRESSION_MARGIN (lib/zstd.h) for `length` bytes in 128 KiB blocks. */
export function inPlaceMargin(length: number): number {
  return 18 + 4 + 3 * Math.ceil(length / ZSTD_BLOCK_MAX) + ZSTD_BLOCK_MAX;
}

/**
 * How large a readChunk `into` buffer must be for the chunk to be read and decoded inside it
 * (the frame at its end, the content from its start), with no frame buffer of its own: 136
 * KiB more than the block (the margin, and two pages: the read starts and ends on one).
 */
export function inPlaceRoom(length: number): number {
  return length + inPlaceMargin(length) + 2 * 4096;
}

/**
 * How large a buffer given to a BlockStore's get() as `into` should be: a block, and the
 * room to decode its chunk in place, so restores and mounts need no frame buffer per Worker.
 * Other backends use its first BLOCK_SIZE bytes.
 */
export const GET_BUFFER_SIZE = inPlaceRoom(BLOCK_SIZE);
