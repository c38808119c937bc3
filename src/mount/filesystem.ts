/**
 * The filesystem behind a backy mount: FUSE requests in, replies out (no device I/O here).
 * The root is one job's folder, or (base directory) one folder per job; a job's folder
 * holds its revisions as read-only image files and `last`/tags as links (names.ts).
 * Everything that would change something answers EROFS.
 */
import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { libc } from "../util/native/libc.ts";
import { O_ACCMODE, O_TRUNC } from "../util/native/open.ts";
import type { Revision } from "../repo/revision.ts";
import type { BaseView } from "./base.ts";
import { Gate } from "./gate.ts";
import type { JobView } from "./jobview.ts";
import { MAX_READ } from "./device.ts";
import {
  type Attr,
  decodeAccess,
  decodeFh,
  decodeInit,
  decodeLseek,
  decodeName,
  decodeOpen,
  decodeRead,
  type Dirent,
  DT_DIR,
  DT_LNK,
  DT_REG,
  encodeAttr,
  encodeDirents,
  encodeEntry,
  encodeInit,
  encodeLseek,
  encodeOpen,
  encodeStatfs,
  Errno,
  FOPEN_KEEP_CACHE,
  InitFlag,
  MODIFYING,
  Op,
  type Request,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  SEEK_DATA,
  SEEK_HOLE,
} from "./protocol.ts";
import {
  type BlockSource,
  DamagedRangeError,
  ImageReader,
  Readahead,
  seekHoleData,
} from "./reader.ts";

/**
 * A reply: an errno (0 = success) and the payload's parts, which stay valid until `done`
 * runs, once the reply is written (or dropped).
 */
export interface Reply {
  error: number;
  parts: Uint8Array[];
  done?: () => void;
}

/** Cache lifetimes (seconds) given to the kernel. Image files never change. */
const IMAGE_TTL = 60;
const LISTING_TTL = 1;

const W_OK = 2;
/** Read-ahead we accept: one block. */
export const READAHEAD_BYTES = 4 * 1024 * 1024;
/** Requests the kernel sends at once (max_background). */
const MAX_BACKGROUND = 16;
/** Reads served at once (gate.ts: each pins at most two 4 MiB blocks). */
export const MAX_READS = 8;

type Node =
  | { kind: "dir"; parent: number; job?: JobView }
  | { kind: "image"; parent: number; job: JobView; rev: Revision }
  | { kind: "link"; parent: number; job: JobView; name: string };

interface FileHandle {
  reader: ImageReader;
  ahead: Readahead;
}

const ok = (...parts: Uint8Array[]): Reply => ({ error: 0, parts });
const fail = (error: number): Reply => ({ error, parts: [] });

/** What the root of the mount is: one job, or a base directory of jobs. */
export type MountRoot = { job: JobView } | { base: BaseView };

export class MountFs {
  #nodes = new Map<number, Node>();
  #ids = new Map<string, number>();
  #nextId = 2;
  #files = new Map<number, FileHandle>();
  #dirs = new Map<number, Dirent[]>();
  #nextFh = 1;
  #reads = new Gate(MAX_READS);
  readonly uid = Deno.uid() ?? 0;
  readonly gid = libc("FUSE").getgid();
  readonly startUs = Date.now() * 1000;
  /** Set once the kernel said goodbye (DESTROY). */
  destroyed = false;

  constructor(
    readonly root: MountRoot,
    readonly source: BlockSource,
    readonly log: Logger,
  ) {
    this.#nodes.set(1, { kind: "dir", parent: 1, job: "job" in root ? root.job : undefined });
  }

  /** Answers one request (never throws: failures become an errno, logged). */
  async handle(req: Request): Promise<Reply> {
    try {
      return await this.#dispatch(req);
    } catch (e) {
      if (e instanceof DamagedRangeError) return fail(Errno.EIO);
      this.log.error("Request failed", { opcode: req.opcode, error: errorMessage(e) });
      return fail(Errno.EIO);
    }
  }

  /** Requests without a reply (FORGET, BATCH_FORGET, INTERRUPT): node ids live on. */
  noReply(_req: Request): void {}

  #dispatch(req: Request): Promise<Reply> | Reply {
    if (MODIFYING.has(req.opcode)) return fail(Errno.EROFS);
    switch (req.opcode) {
      case Op.INIT:
        return this.#init(req);
      case Op.DESTROY:
        this.destroyed = true;
        return ok();
      case Op.LOOKUP:
        return this.#lookup(req.nodeid, decodeName(req.body));
      case Op.GETATTR:
        return this.#getattr(req.nodeid);
      case Op.READLINK:
        return this.#readlink(req.nodeid);
      case Op.OPEN:
        return this.#open(req.nodeid, decodeOpen(req.body).flags);
      case Op.READ:
        return this.#read(req);
      case Op.RELEASE:
        this.#files.delete(decodeFh(req.body));
        return ok();
      case Op.OPENDIR:
        return this.#opendir(req.nodeid);
      case Op.READDIR: {
        const r = decodeRead(req.body);
        const list = this.#dirs.get(r.fh);
        if (!list) return fail(Errno.EBADF);
        return ok(encodeDirents(list, r.offset, r.size));
      }
      case Op.RELEASEDIR:
        this.#dirs.delete(decodeFh(req.body));
        return ok();
      case Op.FLUSH:
      case Op.FSYNC:
      case Op.FSYNCDIR:
        return ok();
      case Op.ACCESS:
        return decodeAccess(req.body) & W_OK ? fail(Errno.EROFS) : ok();
      case Op.STATFS:
        return ok(encodeStatfs(0, this.#nodes.size));
      case Op.LSEEK:
        return this.#lseek(req);
      default:
        return fail(Errno.ENOSYS);
    }
  }

  #init(req: Request): Reply {
    const kernel = decodeInit(req.body);
    if (kernel.major !== 7) {
      this.log.error("Kernel speaks an unknown FUSE protocol", { major: kernel.major });
      return fail(Errno.EPROTO);
    }
    const want = InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.PARALLEL_DIROPS |
      InitFlag.BIG_WRITES;
    this.log.debug("FUSE connection", { kernel: `${kernel.major}.${kernel.minor}` });
    return ok(encodeInit({
      // The kernel keeps the smaller of this and its window (which mount.ts raises as root).
      maxReadahead: Math.max(kernel.maxReadahead, READAHEAD_BYTES),
      flags: kernel.flags & want,
      maxBackground: MAX_BACKGROUND,
      congestionThreshold: MAX_BACKGROUND - 4,
      maxWrite: 4096,
      maxPages: MAX_READ / 4096,
    }));
  }

  #nodeId(parent: number, name: string, make: () => Node): number {
    const key = `${parent}/${name}`;
    let id = this.#ids.get(key);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(key, id);
    }
    this.#nodes.set(id, make());
    return id;
  }

  /** The entries of a folder node: its job's names, or the base directory's jobs. */
  async #children(
    parent: number,
    node: Node & { kind: "dir" },
  ): Promise<Map<string, () => Node>> {
    const out = new Map<string, () => Node>();
    if (node.job) {
      const job = node.job;
      for (const [name, e] of await job.entries()) {
        out.set(
          name,
          e.kind === "image"
            ? () => ({ kind: "image", parent, job, rev: e.rev })
            : () => ({ kind: "link", parent, job, name }),
        );
      }
    } else if ("base" in this.root) {
      for (const [name, job] of await this.root.base.jobs()) {
        out.set(name, () => ({ kind: "dir", parent, job }));
      }
    }
    return out;
  }

  async #lookup(parent: number, name: string): Promise<Reply> {
    const dir = this.#nodes.get(parent);
    if (!dir) return fail(Errno.ENOENT);
    if (dir.kind !== "dir") return fail(Errno.ENOTDIR);
    const make = (await this.#children(parent, dir)).get(name);
    if (!make) return fail(Errno.ENOENT);
    const id = this.#nodeId(parent, name, make);
    const attr = await this.#attr(id);
    if (!attr) return fail(Errno.ENOENT);
    const ttl = this.#nodes.get(id)!.kind === "image" ? IMAGE_TTL : LISTING_TTL;
    return ok(encodeEntry(id, attr, ttl, ttl));
  }

  async #getattr(nodeid: number): Promise<Reply> {
    const attr = await this.#attr(nodeid);
    if (!attr) return fail(Errno.ENOENT);
    const ttl = this.#nodes.get(nodeid)!.kind === "image" ? IMAGE_TTL : LISTING_TTL;
    return ok(encodeAttr(attr, ttl));
  }

  async #attr(id: number): Promise<Attr | undefined> {
    const node = this.#nodes.get(id);
    if (!node) return undefined;
    const base = { ino: id, uid: this.uid, gid: this.gid };
    switch (node.kind) {
      case "dir": {
        if (node.job) await node.job.entries();
        return {
          ...base,
          size: 0,
          blocks: 0,
          timeUs: node.job?.newestUs ?? this.startUs,
          mode: S_IFDIR | 0o500,
          nlink: 2,
        };
      }
      case "image": {
        const info = await node.job.info(node.rev);
        return {
          ...base,
          size: info.size,
          blocks: Math.ceil(info.allocated / 512),
          timeUs: node.rev.timestampUs,
          mode: S_IFREG | 0o400,
          nlink: 1,
        };
      }
      case "link": {
        const e = (await node.job.entries()).get(node.name);
        if (e?.kind !== "link") return undefined;
        return {
          ...base,
          size: new TextEncoder().encode(e.target).length,
          blocks: 0,
          timeUs: e.rev.timestampUs,
          mode: S_IFLNK | 0o777,
          nlink: 1,
        };
      }
    }
  }

  async #readlink(nodeid: number): Promise<Reply> {
    const node = this.#nodes.get(nodeid);
    if (node?.kind !== "link") return fail(Errno.EINVAL);
    const e = (await node.job.entries()).get(node.name);
    if (e?.kind !== "link") return fail(Errno.ENOENT);
    return ok(new TextEncoder().encode(e.target));
  }

  async #open(nodeid: number, flags: number): Promise<Reply> {
    const node = this.#nodes.get(nodeid);
    if (!node) return fail(Errno.ENOENT);
    if (node.kind === "dir") return fail(Errno.EISDIR);
    if ((flags & O_ACCMODE) !== 0 || flags & O_TRUNC) return fail(Errno.EROFS);
    if (node.kind !== "image") return fail(Errno.EINVAL);
    const data = await node.job.data(node.rev);
    const fh = this.#nextFh++;
    this.#files.set(fh, {
      reader: new ImageReader(node.rev.id, data, this.source),
      ahead: new Readahead(this.source.prefetchMax, data.index.blockSize),
    });
    // Revisions never change: what the kernel cached stays valid across opens.
    return ok(encodeOpen(fh, FOPEN_KEEP_CACHE));
  }

  async #read(req: Request): Promise<Reply> {
    const r = decodeRead(req.body);
    const f = this.#files.get(r.fh);
    if (!f) return fail(Errno.EBADF);
    const leave = await this.#reads.enter();
    try {
      // All of it, however much is asked: the kernel takes a short read for the end of the file.
      const range = await f.reader.range(r.offset, r.size);
      f.reader.prefetch(
        f.ahead.next(r.offset, range.length, f.reader.data.index.blockSize, f.reader.count),
      );
      // Written from the cached blocks themselves, then they are let go.
      return {
        error: 0,
        parts: range.parts,
        done: () => {
          range.release();
          leave();
        },
      };
    } catch (e) {
      leave();
      throw e;
    }
  }

  async #opendir(nodeid: number): Promise<Reply> {
    const node = this.#nodes.get(nodeid);
    if (!node) return fail(Errno.ENOENT);
    if (node.kind !== "dir") return fail(Errno.ENOTDIR);
    const list: Dirent[] = [
      { ino: nodeid, name: ".", type: DT_DIR },
      { ino: node.parent, name: "..", type: DT_DIR },
    ];
    for (const [name, make] of await this.#children(nodeid, node)) {
      const child = make();
      list.push({
        ino: this.#nodeId(nodeid, name, () => child),
        name,
        type: child.kind === "dir" ? DT_DIR : child.kind === "image" ? DT_REG : DT_LNK,
      });
    }
    const fh = this.#nextFh++;
    this.#dirs.set(fh, list);
    return ok(encodeOpen(fh, 0));
  }

  #lseek(req: Request): Reply {
    const r = decodeLseek(req.body);
    const f = this.#files.get(r.fh);
    if (!f) return fail(Errno.EBADF);
    if (r.whence !== SEEK_DATA && r.whence !== SEEK_HOLE) return fail(Errno.EINVAL);
    const at = seekHoleData(f.reader.data.index, f.reader.size, r.offset, r.whence);
    return at < 0 ? fail(Errno.ENXIO) : ok(encodeLseek(at));
  }
}
