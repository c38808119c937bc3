/**
 * A job's metadata between its directory and the bucket (docs/s3.md): the bucket holds
 * every complete revision's `.rev` and `.index`, so another host can list and restore the
 * job from the bucket alone. `pullJob` brings a job directory up to date: what the bucket
 * has and the directory lacks (or holds differently) comes down; a complete local revision
 * the bucket lost is pushed when its index is there (its publication failed), else it was
 * removed by another host and goes here too.
 */
import { createHash } from "node:crypto";
import { BackyError, errorMessage } from "../util/errors.ts";
import { atomicWrite } from "../util/fs.ts";
import { logger } from "../util/log.ts";
import type { JobDir } from "../repo/jobdir.ts";
import { isComplete } from "../repo/revision.ts";
import type { S3Client } from "./s3_client.ts";
import { indexKey, jobFileOfKey, jobPrefix, revKey } from "./s3_layout.ts";

const log = logger("s3");

/** One revision as the bucket lists it. */
export interface RemoteRev {
  /** The .rev object's ETag (MD5 of its content for a simple PUT). */
  revEtag?: string;
  hasIndex: boolean;
}

/** One revision as the job directory has it. */
export interface LocalRev {
  md5: string;
  complete: boolean;
  s3: boolean;
  hasIndex: boolean;
}

export type SyncAction =
  | { do: "download"; id: string; index: boolean }
  | { do: "push"; id: string }
  | { do: "remove-local"; id: string };

/** What brings the directory up to date with the bucket (pure). */
export function planPull(
  remote: Map<string, RemoteRev>,
  local: Map<string, LocalRev>,
): SyncAction[] {
  const out: SyncAction[] = [];
  for (const [id, r] of remote) {
    if (!r.revEtag) continue; // an index without .rev: being published or being removed
    const l = local.get(id);
    if (!l || l.md5 !== r.revEtag) {
      out.push({ do: "download", id, index: r.hasIndex && !(l?.hasIndex ?? false) });
    } else if (r.hasIndex && !l.hasIndex) out.push({ do: "download", id, index: true });
  }
  for (const [id, l] of local) {
    if (!l.s3 || !l.complete || remote.get(id)?.revEtag) continue;
    out.push(remote.get(id)?.hasIndex ? { do: "push", id } : { do: "remove-local", id });
  }
  return out;
}

/** The bucket's revisions of `name`. */
export async function listRemote(client: S3Client, name: string): Promise<Map<string, RemoteRev>> {
  const out = new Map<string, RemoteRev>();
  for await (const obj of client.list(jobPrefix(name))) {
    const f = jobFileOfKey(obj.key);
    if (!f || f.job !== name) continue;
    const r = out.get(f.id) ?? { hasIndex: false };
    if (f.kind === "rev") r.revEtag = obj.etag;
    else r.hasIndex = true;
    out.set(f.id, r);
  }
  return out;
}

async function listLocal(job: JobDir): Promise<Map<string, LocalRev>> {
  const out = new Map<string, LocalRev>();
  const scan = await job.scan();
  for (const rev of scan.revisions) {
    const text = await Deno.readFile(job.revPath(rev.id));
    const hasIndex = await Deno.stat(job.indexPath(rev.id)).then(() => true, () => false);
    out.set(rev.id, {
      md5: createHash("md5").update(text).digest("hex"),
      complete: isComplete(rev),
      s3: rev.backend === "s3",
      hasIndex,
    });
  }
  return out;
}

/** Brings the job directory up to date with the bucket; returns what it did. */
export async function pullJob(client: S3Client, job: JobDir, name: string): Promise<SyncAction[]> {
  const actions = planPull(await listRemote(client, name), await listLocal(job));
  for (const a of actions) {
    if (a.do === "download") {
      if (a.index) {
        const index = await client.get(indexKey(name, a.id));
        if (index) await atomicWrite(job.indexPath(a.id), index, 0o440);
      }
      const rev = await client.get(revKey(name, a.id));
      if (rev) await atomicWrite(job.revPath(a.id), rev, 0o440);
    } else if (a.do === "push") {
      await client.put(revKey(name, a.id), await Deno.readFile(job.revPath(a.id)));
    } else {
      log.info("Revision removed from the bucket by another host", { id: a.id });
      await job.removeRevision(a.id);
    }
  }
  if (actions.length) {
    log.info("Job directory synchronised with the bucket", {
      downloaded: actions.filter((a) => a.do === "download").length,
      pushed: actions.filter((a) => a.do === "push").length,
      removed: actions.filter((a) => a.do === "remove-local").length,
    });
  }
  return actions;
}

/** Publishes one revision's `.rev` (its index went up at commit). */
export async function publishRev(
  client: S3Client,
  job: JobDir,
  name: string,
  id: string,
): Promise<void> {
  try {
    await client.put(revKey(name, id), await Deno.readFile(job.revPath(id)), {
      contentType: "text/yaml",
    });
  } catch (e) {
    throw new BackyError(`cannot publish revision ${id}: ${errorMessage(e)}`);
  }
}
