/**
 * The s3 store (issue 15, docs/s3.md): blocks as chunk objects in one bucket that many
 * backup hosts share (deduplicated across jobs and hosts), each job's `.rev`, `.index` and
 * `config` in the job directory and in the bucket, leases instead of a database, and a
 * collector that runs in steps (s3_gc.ts). The Workers' side is s3_blocks.ts.
 */
import { basename } from "node:path";
import { BackyError, errorMessage } from "../util/errors.ts";
import { removeIfExists } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import { resolveS3, type S3Settings } from "../config/s3_config.ts";
import { BlockIndex, hex } from "../repo/index_file.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { serializeJobConfig } from "../repo/jobconfig.ts";
import { assertComplete, type Revision } from "../repo/revision.ts";
import type { GcResult } from "./gc.ts";
import { packChunk, type S3Ref, unpackChunk } from "./s3_blocks.ts";
import { S3Client, type S3Endpoint } from "./s3_client.ts";
import { gcStep } from "./s3_gc.ts";
import {
  chunkKey,
  condemnedKey,
  configKey,
  GC_STATE,
  indexKey,
  leaseKey,
  parseGcState,
  quarantineKey,
  revKey,
} from "./s3_layout.ts";
import { LeaseHolder } from "./s3_lease.ts";
import { publishRev, pullJob } from "./s3_sync.ts";
import type {
  Claim,
  DamagedBlock,
  PullResult,
  RevisionData,
  RevisionWriter,
  Store,
} from "./store.ts";

const log = logger("s3");

/** Reads a credentials file, refusing one that others may read or change. */
function readSecretFile(path: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const mode = info.mode ?? 0;
  if ((mode & 0o004) !== 0 || (mode & 0o022) !== 0) {
    throw new Error(
      `credentials file ${path} is readable by others or writable by others than its owner ` +
        `(mode ${(mode & 0o777).toString(8)}): chmod 600 ${path}`,
    );
  }
  return Deno.readTextFileSync(path);
}

/** The connection for these settings (environment and credentials files as AWS tools). */
export function s3Endpoint(s: S3Settings): S3Endpoint {
  try {
    const c = resolveS3(s, {
      env: Deno.env.toObject(),
      readFile: readSecretFile,
      home: Deno.env.get("HOME"),
    });
    const ep: S3Endpoint = {
      endpoint: c.endpoint,
      bucket: c.bucket,
      region: c.region,
      accessKeyId: c.accessKeyId,
      secretAccessKey: c.secretAccessKey,
      attempts: s.attempts,
    };
    if (c.sessionToken) ep.sessionToken = c.sessionToken;
    return ep;
  } catch (e) {
    if (e instanceof BackyError) throw e;
    throw new BackyError(`s3 bucket '${s.bucket}': ${errorMessage(e)}`);
  }
}

/** The job's name in the bucket: `s3.job`, else the job directory's name. */
export function bucketJobName(job: JobDir): string {
  return job.config.s3?.job ?? basename(job.path);
}

export class S3Store implements Store {
  readonly backend = "s3" as const;
  /** Content-addressed chunks, shared by every revision and host that stores the same block. */
  readonly sharedBlocks = true;
  private readonly settings: S3Settings;
  private readonly name: string;
  private ep?: S3Endpoint;
  private cl?: S3Client;
  private lease?: LeaseHolder;

  constructor(private readonly job: JobDir) {
    if (!job.config.s3) {
      throw new BackyError(`${job.path}/config: backend s3 needs an s3 mapping (bucket, ...)`);
    }
    this.settings = job.config.s3;
    this.name = bucketJobName(job);
  }

  private get client(): S3Client {
    this.ep ??= s3Endpoint(this.settings);
    this.cl ??= new S3Client(this.ep);
    return this.cl;
  }

  private get host(): string {
    return this.settings.host ?? Deno.hostname();
  }

  /** Job `name` in bucket `b`, for messages. */
  private get what(): string {
    return `job '${this.name}' in s3 bucket '${this.settings.bucket}'`;
  }

  async claim(op: string): Promise<Claim> {
    const client = this.client;
    await client.checkBucket();
    this.lease = await LeaseHolder.acquire(
      client,
      leaseKey(this.name),
      this.what,
      op,
      this.host,
      this.settings.leaseTtl,
    );
    try {
      await this.publishConfig();
      await pullJob(client, this.job, this.name);
    } catch (e) {
      await this.lease.release();
      this.lease = undefined;
      throw e;
    }
    return {
      release: async () => {
        await this.lease?.release();
        this.lease = undefined;
      },
    };
  }

  /** The job's config in the bucket, without secrets (a Consul token stays here). */
  private async publishConfig(): Promise<void> {
    const source = { ...this.job.config.source };
    if ("consul_acl_token" in source) source.consul_acl_token = null;
    const text = serializeJobConfig({ ...this.job.config, source, schedule: undefined });
    const bytes = new TextEncoder().encode(text);
    const have = await this.client.get(configKey(this.name));
    if (have && new TextDecoder().decode(have) === text) return;
    await this.client.put(configKey(this.name), bytes, { contentType: "text/yaml" });
  }

  async publish(rev: Revision): Promise<void> {
    if (rev.backend !== "s3") return;
    await publishRev(this.client, this.job, this.name, rev.id);
  }

  /** Brings the job directory up to date with the bucket (no lease: read-only). */
  async pull(): Promise<PullResult> {
    const actions = await pullJob(this.client, this.job, this.name);
    const count = (what: string) => actions.filter((a) => a.do === what).length;
    return {
      fetched: count("download"),
      removed: count("remove-local"),
      published: count("push"),
    };
  }

  async begin(rev: Revision, parent: Revision | undefined): Promise<RevisionWriter> {
    const client = this.client;
    if (!this.lease) await this.claim("backup"); // released when its lease runs out
    const lease = this.lease!;
    const ref: S3Ref = {
      backend: "s3",
      s3: this.ep!,
      uploads: this.settings.uploads,
      ...(parent ? { known: this.job.indexPath(parent.id) } : {}),
    };
    const condemned = await this.condemnedList();
    if (condemned) ref.condemned = condemned;
    const job = this.job, name = this.name;
    let bytesStored = 0;
    let indexUp = false;
    const cleanup = async () => {
      if (condemned) await removeIfExists(condemned.file).catch(() => {});
    };
    return {
      ref,
      setSize: () => Promise.resolve(),
      stored(_kind, _digest, bytes) {
        bytesStored += bytes;
      },
      async commit(index) {
        // A lease lost while copying: another host may have collected what we reused.
        lease.assertValid(`backup of ${name}`);
        await client.put(indexKey(name, rev.id), index.encode());
        indexUp = true;
        await job.writeIndex(rev.id, index);
      },
      async abort() {
        // Chunks stay: other jobs and hosts may already reuse them; the collector decides.
        if (indexUp) await client.delete(indexKey(name, rev.id)).catch(() => {});
        await job.removeIndex(rev.id).catch(() => {});
        await cleanup();
      },
      seal: cleanup,
      stats: () => ({ bytes_stored: bytesStored }),
    };
  }

  /**
   * The collector's condemned list, saved for the Workers, when one is out. While the
   * collector sweeps, a backup waits for it to finish (seconds to minutes).
   */
  private async condemnedList(): Promise<{ gc: string; file: string } | undefined> {
    for (let waited = 0;; waited++) {
      const raw = await this.client.get(GC_STATE);
      if (!raw) return undefined;
      const state = parseGcState(raw);
      if (state.phase === "condemned") {
        const list = await this.client.get(condemnedKey(state.id));
        if (!list) return undefined; // finished meanwhile
        const file = `${this.job.path}/.s3-condemned-${state.id}`;
        await Deno.writeFile(file, list, { mode: 0o600 });
        return { gc: state.id, file };
      }
      if (waited === 0) log.info("Waiting for the garbage collection sweep to finish");
      if (waited > this.settings.leaseTtl * 2) {
        throw new BackyError(
          `s3 bucket '${this.settings.bucket}': the collection sweep does not end`,
        );
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async open(rev: Revision): Promise<RevisionData> {
    assertComplete(rev);
    const client = this.client;
    let index = await this.job.readIndex(rev.id);
    if (!index) {
      const key = indexKey(this.name, rev.id);
      const bytes = await client.get(key);
      if (!bytes) {
        throw new BackyError(
          `revision ${rev.id}: index missing in ${this.job.path} and in s3 bucket ` +
            `'${this.settings.bucket}'`,
        );
      }
      index = BlockIndex.decode(bytes, key);
      await this.job.writeIndex(rev.id, index);
    }
    const ref: S3Ref = { backend: "s3", s3: this.ep!, uploads: this.settings.uploads };
    return { size: index.size, index, ref };
  }

  imageName(): undefined {
    return undefined;
  }

  async removeRevision(id: string): Promise<void> {
    // The bucket's .rev first: no host lists a revision whose index is going.
    await this.client.delete(revKey(this.name, id));
    await this.client.delete(indexKey(this.name, id));
    await this.job.removeRevision(id);
  }

  async collectGarbage(): Promise<GcResult> {
    const r = await gcStep(this.client, {
      host: this.host,
      leaseTtl: this.settings.leaseTtl,
      grace: this.settings.gcGrace,
      interval: this.settings.gcInterval,
      ownLease: this.lease?.lease.id,
    });
    log.info("Bucket garbage collection", { ...r });
    return { kept: r.kept, removed: r.removed, tempRemoved: 0, corruptRemoved: 0 };
  }

  async quarantine(blocks: DamagedBlock[]): Promise<string[]> {
    const moved: string[] = [];
    for (const b of blocks) {
      const key = chunkKey(b.digest);
      const packed = await this.client.get(key);
      if (!packed) continue;
      try {
        unpackChunk(packed, b.digest, b.length, key);
      } catch {
        const aside = quarantineKey(hex(b.digest), this.client.serverNow());
        await this.client.put(aside, packed);
        await this.client.delete(key);
        moved.push(`s3://${this.settings.bucket}/${aside}`);
      }
    }
    return moved;
  }
}

/** Exported for tests and tools: the chunk object of a block, as the Workers write it. */
export { packChunk };
