// A Consul stand-in for tests: an HTTP server on a real socket implementing Consul's KV
// endpoints as Consul documents them (https://developer.hashicorp.com/consul/api-docs/kv:
// PUT/GET/DELETE /v1/kv/<key>, `recurse`, base64 values in GET, `true` from PUT and DELETE,
// ACL token in X-Consul-Token, 403 for a wrong one), and the VM host's agent: a PUT of
// `snapshot/<uuid>` makes it take the requested snapshot at once, after a delay, or never.

export const DEFAULT_TOKEN = "s3cret-acl-token";

interface KvEntry {
  value: Uint8Array;
  flags: number;
  createIndex: number;
  modifyIndex: number;
}

export type HostMode = { kind: "now" } | { kind: "after"; ms: number } | { kind: "never" };

/** Consul's KV HTTP API (the parts backy uses), plus a VM host acting on snapshot requests. */
export class FakeConsul {
  readonly kv = new Map<string, KvEntry>();
  /** Every request: method, path with query, token sent. */
  readonly log: { method: string; path: string; token: string | null }[] = [];
  /** Snapshot requests as the host saw them. */
  readonly requests: { key: string; value: unknown }[] = [];
  host: HostMode = { kind: "now" };
  #index = 1;
  #pending: Promise<void>[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(
    /** VM name → image spec, as the host knows its VMs' root disks. */
    readonly vms: Record<string, string>,
    /** What the VM host does to snapshot an image (e.g. `rbd snap create`). */
    readonly takeSnapshot: (image: string, snapshot: string) => Promise<void>,
    readonly token: string | null = DEFAULT_TOKEN,
  ) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req) => this.#handle(req),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  put(key: string, value: string) {
    const i = this.#index++;
    this.kv.set(key, {
      value: new TextEncoder().encode(value),
      flags: 0,
      createIndex: i,
      modifyIndex: i,
    });
  }

  keys(): string[] {
    return [...this.kv.keys()].sort();
  }

  async close() {
    await Promise.all(this.#pending);
    await this.#server.shutdown();
  }

  #entry(key: string, e: KvEntry) {
    return {
      LockIndex: 0,
      Key: key,
      Flags: e.flags,
      // Consul: base64 of the raw bytes, null for an empty value
      Value: e.value.length ? btoa(String.fromCharCode(...e.value)) : null,
      CreateIndex: e.createIndex,
      ModifyIndex: e.modifyIndex,
    };
  }

  async #handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const token = req.headers.get("X-Consul-Token") ?? url.searchParams.get("token");
    this.log.push({ method: req.method, path: url.pathname + url.search, token });
    if (!url.pathname.startsWith("/v1/kv/")) return new Response("Not found", { status: 404 });
    if (this.token !== null && token !== this.token) {
      await req.body?.cancel();
      return new Response("Permission denied", { status: 403 });
    }
    const key = decodeURIComponent(url.pathname.slice("/v1/kv/".length));
    const recurse = url.searchParams.has("recurse");
    const json = (v: unknown, status = 200) =>
      new Response(JSON.stringify(v), {
        status,
        headers: { "Content-Type": "application/json", "X-Consul-Index": String(this.#index) },
      });
    if (req.method === "PUT") {
      const value = new Uint8Array(await req.arrayBuffer());
      const old = this.kv.get(key);
      const i = this.#index++;
      this.kv.set(key, {
        value,
        flags: Number(url.searchParams.get("flags") ?? 0),
        createIndex: old?.createIndex ?? i,
        modifyIndex: i,
      });
      if (key.startsWith("snapshot/")) await this.#hostSees(key, value);
      return json(true);
    }
    if (req.method === "GET") {
      const found = [...this.kv.entries()]
        .filter(([k]) => (recurse ? k.startsWith(key) : k === key))
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([k, e]) => this.#entry(k, e));
      return found.length ? json(found) : new Response(null, { status: 404 });
    }
    if (req.method === "DELETE") {
      for (const k of [...this.kv.keys()]) {
        if (recurse ? k.startsWith(key) : k === key) this.kv.delete(k);
      }
      return json(true);
    }
    return new Response("Method not allowed", { status: 405 });
  }

  /** The VM host's agent: freeze, snapshot, thaw (here: just the snapshot). */
  async #hostSees(key: string, raw: Uint8Array) {
    let value: { vm?: string; snapshot?: string };
    try {
      value = JSON.parse(new TextDecoder().decode(raw));
    } catch {
      return;
    }
    this.requests.push({ key, value });
    const image = value.vm ? this.vms[value.vm] : undefined;
    if (!image || !value.snapshot) return;
    const snapshot = value.snapshot;
    const snap = () => this.takeSnapshot(image, snapshot);
    if (this.host.kind === "now") await snap();
    else if (this.host.kind === "after") {
      const ms = this.host.ms;
      this.#pending.push(new Promise((r) => setTimeout(r, ms)).then(snap));
    }
  }
}
