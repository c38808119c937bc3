/**
 * Consul-triggered snapshots of the `flyingcircus` source (spec 3.5): write the request
 * `snapshot/<uuid>` = {"vm", "snapshot"} into Consul's KV store (the VM host's agent
 * freezes the guest and snapshots), poll until the snapshot exists, always delete the
 * request, and drop stale requests for the same VM (#100024).
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import { logger } from "../util/log.ts";

const log = logger("consul");

export interface ConsulSnapshotRequest {
  url: string;
  token: string | null;
  vm: string;
  snapshot: string;
  timeoutSeconds: number;
  hasSnapshot: () => Promise<boolean>;
  /** Poll interval in ms (spec: 2 s). */
  pollMs?: number;
}

function headers(token: string | null): HeadersInit {
  return token ? { "X-Consul-Token": token } : {};
}

async function consul(url: string, init: RequestInit): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    throw new BackyError(
      `Consul request ${init.method ?? "GET"} ${url} failed: ${errorMessage(e)}`,
    );
  }
  return res;
}

/** True when the snapshot appeared in time; false on time-out (caller falls back). */
export async function requestConsulSnapshot(req: ConsulSnapshotRequest): Promise<boolean> {
  const base = req.url.replace(/\/+$/, "");
  const key = `snapshot/${crypto.randomUUID()}`;
  const put = await consul(`${base}/v1/kv/${key}`, {
    method: "PUT",
    headers: { ...headers(req.token), "Content-Type": "application/json" },
    body: JSON.stringify({ vm: req.vm, snapshot: req.snapshot }),
  });
  const putBody = await put.text();
  if (!put.ok) {
    throw new BackyError(`Consul refused the snapshot request (${put.status}): ${putBody.trim()}`);
  }
  log.info("Requested snapshot through Consul", { key, vm: req.vm, snapshot: req.snapshot });
  try {
    const deadline = Date.now() + req.timeoutSeconds * 1000;
    const poll = req.pollMs ?? 2000;
    while (true) {
      if (await req.hasSnapshot()) return true;
      if (Date.now() + poll > deadline) return false;
      await new Promise((r) => setTimeout(r, poll));
    }
  } finally {
    await deleteKey(base, key, req.token);
    await dropStaleRequests(base, req.vm, req.token);
  }
}

async function deleteKey(base: string, key: string, token: string | null): Promise<void> {
  try {
    const res = await consul(`${base}/v1/kv/${key}`, { method: "DELETE", headers: headers(token) });
    await res.body?.cancel();
    if (!res.ok) log.warning("Cannot delete Consul key", { key, status: res.status });
  } catch (e) {
    log.warning("Cannot delete Consul key", { key, error: errorMessage(e) });
  }
}

/** Deletes requests for this VM's backy snapshots, and unreadable ones. */
async function dropStaleRequests(base: string, vm: string, token: string | null): Promise<void> {
  let entries: { Key: string; Value: string | null }[];
  try {
    const res = await consul(`${base}/v1/kv/snapshot/?recurse=true`, { headers: headers(token) });
    if (res.status === 404) {
      await res.body?.cancel();
      return;
    }
    if (!res.ok) throw new Error(`status ${res.status}`);
    entries = await res.json();
  } catch (e) {
    log.warning("Cannot list Consul snapshot requests", { error: errorMessage(e) });
    return;
  }
  for (const e of entries) {
    let stale = false;
    try {
      const v = JSON.parse(atob(e.Value ?? ""));
      stale = v?.vm === vm && typeof v.snapshot === "string" && v.snapshot.startsWith("backy-");
    } catch {
      stale = true; // not JSON: nobody can execute it
    }
    if (stale) {
      log.info("Removing stale snapshot request", { key: e.Key });
      await deleteKey(base, e.Key, token);
    }
  }
}
