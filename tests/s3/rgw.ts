/**
 * Test helper: a real S3 gateway. An already running one when AWS_ENDPOINT_URL,
 * AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set; else Ceph's radosgw on the test
 * cluster (tests/ceph/cluster.sh rgw, as root, with Debian's radosgw package). Buckets are
 * made and inspected with the aws4fetch library directly, not through src/, so the code
 * under test does not set up its own fixtures.
 */
import { AwsClient } from "aws4fetch";
import { cephCluster, CLUSTER_DIR } from "../ceph/cluster.ts";

export interface Gateway {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** AWS_* variables for backy child processes (plus PATH/HOME). */
  env: Record<string, string>;
  /** The test cluster's directory when the gateway is ours (then more can be started). */
  clusterDir?: string;
}

export type Maybe<T> = T | { ignored: string };

const SCRIPT = new URL("../ceph/cluster.sh", import.meta.url).pathname;
let cached: Promise<Maybe<Gateway>> | undefined;

/** The shared gateway for tests, or why there is none. */
export function gateway(): Promise<Maybe<Gateway>> {
  cached ??= find();
  return cached;
}

function envFor(endpoint: string, key: string, secret: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: key,
    AWS_SECRET_ACCESS_KEY: secret,
  };
  for (const k of ["DENO_DIR", "TMPDIR", "CEPH_CONF"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

async function find(): Promise<Maybe<Gateway>> {
  const url = Deno.env.get("AWS_ENDPOINT_URL");
  const key = Deno.env.get("AWS_ACCESS_KEY_ID");
  const secret = Deno.env.get("AWS_SECRET_ACCESS_KEY");
  if (url && key && secret) {
    return {
      endpoint: url,
      accessKeyId: key,
      secretAccessKey: secret,
      env: envFor(url, key, secret),
    };
  }
  const dir = await clusterDir();
  if (typeof dir !== "string") return dir;
  return await startRgw(dir, "x");
}

async function clusterDir(): Promise<string | { ignored: string }> {
  if (Deno.uid() !== 0) return { ignored: "needs root (or AWS_ENDPOINT_URL of a running gateway)" };
  if (!(await which("radosgw"))) {
    return { ignored: "needs Debian's radosgw package (or AWS_ENDPOINT_URL)" };
  }
  const fromCi = Deno.env.get("CEPH_TEST_DIR");
  if (fromCi) return fromCi;
  const c = await cephCluster();
  if ("ignored" in c) return c;
  return CLUSTER_DIR;
}

/** Starts (or finds) radosgw `name` on the test cluster in `dir`. */
async function startRgw(dir: string, name: string): Promise<Gateway> {
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, "rgw", dir, name],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`cluster.sh rgw failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const vars: Record<string, string> = {};
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2];
  }
  const endpoint = vars.BACKY_TEST_RGW_URL;
  const key = vars.BACKY_TEST_RGW_ACCESS_KEY, secret = vars.BACKY_TEST_RGW_SECRET_KEY;
  return {
    endpoint,
    accessKeyId: key,
    secretAccessKey: secret,
    env: envFor(endpoint, key, secret),
    clusterDir: dir,
  };
}

/** A gateway of a test's own (it may stop and restart it), or why there is none. */
export async function ownGateway(name: string): Promise<
  Maybe<Gateway & { stop(): Promise<void>; start(): Promise<void> }>
> {
  const dir = await clusterDir();
  if (typeof dir !== "string") return dir;
  const gw = await startRgw(dir, name);
  const run = async (args: string[]) => {
    const o = await new Deno.Command("bash", { args: [SCRIPT, ...args], stdout: "null" })
      .output();
    if (!o.success) throw new Error(`cluster.sh ${args.join(" ")} failed`);
  };
  return {
    ...gw,
    stop: () => run(["rgw-stop", dir, name, "TERM"]),
    start: async () => {
      await run(["rgw", dir, name]);
    },
  };
}

/** An S3 client for checks, independent of src/. */
export function aws(gw: Gateway): AwsClient {
  return new AwsClient({
    accessKeyId: gw.accessKeyId,
    secretAccessKey: gw.secretAccessKey,
    service: "s3",
    region: "us-east-1",
    retries: 0,
  });
}

let buckets = 0;

/** A new, uniquely named bucket. */
export async function newBucket(gw: Gateway, prefix = "t"): Promise<string> {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const name = `backy-${prefix}-${Deno.pid}-${++buckets}-${rand}`.toLowerCase();
  const r = await aws(gw).fetch(`${gw.endpoint}/${name}`, { method: "PUT" });
  await r.body?.cancel();
  if (r.status !== 200) throw new Error(`cannot create bucket ${name}: ${r.status}`);
  return name;
}

/** Every key in a bucket under `prefix` with its last-modified time. */
export async function listKeys(
  gw: Gateway,
  bucket: string,
  prefix = "",
): Promise<{ key: string; lastModified: number }[]> {
  const out: { key: string; lastModified: number }[] = [];
  let token: string | undefined;
  do {
    const q = new URLSearchParams({ "list-type": "2", prefix });
    if (token) q.set("continuation-token", token);
    const r = await aws(gw).fetch(`${gw.endpoint}/${bucket}?${q}`);
    const xml = await r.text();
    if (r.status !== 200) throw new Error(`list ${bucket}: ${r.status} ${xml}`);
    for (const m of xml.matchAll(/<Key>([^<]*)<\/Key><LastModified>([^<]*)<\/LastModified>/g)) {
      out.push({ key: m[1], lastModified: Date.parse(m[2]) });
    }
    token = /<IsTruncated>true<\/IsTruncated>/.test(xml)
      ? /<NextContinuationToken>([^<]*)</.exec(xml)?.[1]
      : undefined;
  } while (token);
  return out;
}

/** An object's bytes (undefined: absent). */
export async function getObject(gw: Gateway, bucket: string, key: string) {
  const r = await aws(gw).fetch(`${gw.endpoint}/${bucket}/${key}`);
  if (r.status === 404) {
    await r.body?.cancel();
    return undefined;
  }
  if (r.status !== 200) throw new Error(`get ${key}: ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Stores an object directly (e.g. a lease of a simulated other host). */
export async function putObject(gw: Gateway, bucket: string, key: string, body: Uint8Array) {
  const r = await aws(gw).fetch(`${gw.endpoint}/${bucket}/${key}`, {
    method: "PUT",
    body: body as BodyInit,
  });
  await r.body?.cancel();
  if (r.status !== 200) throw new Error(`put ${key}: ${r.status}`);
}

/** Registers a test needing the gateway; without one it is ignored, with the reason. */
export function s3Test(
  gw: Maybe<Gateway>,
  name: string,
  fn: (gw: Gateway) => Promise<void>,
): void {
  if ("ignored" in gw) {
    Deno.test({ name: `${name} (ignored: ${gw.ignored})`, ignore: true, fn() {} });
    return;
  }
  Deno.test({ name, fn: () => fn(gw) });
}

async function which(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const st = await Deno.stat(`${dir}/${name}`);
      if (st.isFile) return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** Deletes an object directly (e.g. metadata another host removed). */
export async function deleteObject(gw: Gateway, bucket: string, key: string) {
  const r = await aws(gw).fetch(`${gw.endpoint}/${bucket}/${key}`, { method: "DELETE" });
  await r.body?.cancel();
  if (r.status !== 204 && r.status !== 200) throw new Error(`delete ${key}: ${r.status}`);
}
