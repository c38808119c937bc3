/**
 * A small S3 client (path-style, SigV4 signed by the aws4fetch library) for what the s3
 * store needs: get, head, put (optionally conditional), delete, batch delete, list and a
 * bucket check. Transient failures (network errors, 5xx, 429, throttling) are retried with
 * exponential backoff and jitter; every other answer is a clear BackyError. The secret key
 * never appears in an error or a log line (only the signer sees it).
 */
import { AwsV4Signer } from "aws4fetch";
import { createHash } from "node:crypto";
import { BackyError, errorMessage } from "../util/errors.ts";

/** Where and as whom to talk S3 (structured-clone safe: it travels to the Workers). */
export interface S3Endpoint {
  /** `http(s)://host[:port]`, without the bucket (path-style addressing). */
  endpoint: string;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Attempts per request for transient failures (at least 1). */
  attempts: number;
}

/** One object of a listing. */
export interface S3Object {
  key: string;
  size: number;
  /** Milliseconds since the epoch, server clock. */
  lastModified: number;
  etag: string;
}

/** An answer S3 gave that is not a success (status, S3 error code). */
export class S3Error extends BackyError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
    this.name = "S3Error";
  }
}

/** Statuses and codes worth another try. */
export function isTransient(status: number, code = ""): boolean {
  return status >= 500 || status === 429 || status === 408 ||
    ["SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "InternalError"].includes(code);
}

/** Milliseconds to wait before attempt `n` (1-based retry number): 250 ms doubling to 8 s. */
export function backoffMs(n: number, random = Math.random()): number {
  const base = Math.min(8000, 250 * 2 ** (n - 1));
  return Math.round(base / 2 + (base / 2) * random);
}

/** RFC 3986 encoding of an object key, keeping its slashes. */
export function encodeKey(key: string): string {
  return key.split("/").map((p) =>
    encodeURIComponent(p).replace(
      /[!'()*]/g,
      (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
    )
  ).join("/");
}

/** The text of the first `<tag>` element in an S3 XML answer, entities decoded. */
export function xmlText(xml: string, tag: string): string | undefined {
  const open = xml.indexOf(`<${tag}>`);
  if (open < 0) return undefined;
  const close = xml.indexOf(`</${tag}>`, open);
  if (close < 0) return undefined;
  return decodeEntities(xml.slice(open + tag.length + 2, close));
}

/** Every `<tag>…</tag>` element's inner text, in order (no nesting of the same tag). */
export function xmlElements(xml: string, tag: string): string[] {
  const out: string[] = [];
  let at = 0;
  while (true) {
    const open = xml.indexOf(`<${tag}>`, at);
    if (open < 0) return out;
    const close = xml.indexOf(`</${tag}>`, open);
    if (close < 0) return out;
    out.push(xml.slice(open + tag.length + 2, close));
    at = close + tag.length + 3;
  }
}

function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    switch (e) {
      case "lt":
        return "<";
      case "gt":
        return ">";
      case "amp":
        return "&";
      case "quot":
        return '"';
      case "apos":
        return "'";
    }
    return String.fromCodePoint(e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

/** Parses a ListObjectsV2 answer (requested with encoding-type=url). */
export function parseListing(xml: string): { objects: S3Object[]; next?: string } {
  const objects = xmlElements(xml, "Contents").map((c) => ({
    key: decodeURIComponent((xmlText(c, "Key") ?? "").replace(/\+/g, " ")),
    size: Number(xmlText(c, "Size") ?? 0),
    lastModified: Date.parse(xmlText(c, "LastModified") ?? ""),
    etag: (xmlText(c, "ETag") ?? "").replace(/"/g, ""),
  }));
  const truncated = xmlText(xml, "IsTruncated") === "true";
  return { objects, next: truncated ? xmlText(xml, "NextContinuationToken") : undefined };
}

interface Answer {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Requests sent, by method (for the operator's and the benchmark's request counts). */
export type RequestCounts = Record<string, number>;

export class S3Client {
  /** Server clock minus local clock, from the last answer's Date header (ms). */
  private skew = 0;
  readonly requests: RequestCounts = {};

  constructor(readonly ep: S3Endpoint, private readonly sleep = delay) {}

  /** `endpoint/bucket` for messages (no credentials). */
  get where(): string {
    return `s3 bucket '${this.ep.bucket}' at ${this.ep.endpoint}`;
  }

  /** Now by the server's clock (ms), as last seen in a Date header. */
  serverNow(): number {
    return Date.now() + this.skew;
  }

  /** An object's bytes, or undefined when it does not exist. */
  async get(key: string): Promise<Uint8Array | undefined> {
    const r = await this.request("GET", key, { ok: [200, 404] });
    return r.status === 404 ? undefined : r.body;
  }

  /** An object's size, date and ETag, or undefined when it does not exist. */
  async head(key: string): Promise<S3Object | undefined> {
    const r = await this.request("HEAD", key, { ok: [200, 404] });
    if (r.status === 404) return undefined;
    return {
      key,
      size: Number(r.headers.get("content-length") ?? 0),
      lastModified: Date.parse(r.headers.get("last-modified") ?? ""),
      etag: (r.headers.get("etag") ?? "").replace(/"/g, ""),
    };
  }

  /**
   * Stores an object; its SHA-256 is signed, so the server refuses damaged bytes.
   * `ifNoneMatch`: only when absent (false when it exists); `ifMatch`: only when its ETag
   * is this one (false otherwise). Returns true when written.
   */
  async put(
    key: string,
    body: Uint8Array,
    opts: { ifNoneMatch?: boolean; ifMatch?: string; contentType?: string } = {},
  ): Promise<boolean> {
    const headers: Record<string, string> = {
      "content-type": opts.contentType ?? "application/octet-stream",
    };
    if (opts.ifNoneMatch) headers["if-none-match"] = "*";
    if (opts.ifMatch) headers["if-match"] = `"${opts.ifMatch}"`;
    const conditional = opts.ifNoneMatch || opts.ifMatch !== undefined;
    const r = await this.request("PUT", key, {
      body,
      headers,
      ok: conditional ? [200, 412] : [200],
    });
    return r.status === 200;
  }

  /** Deletes an object (absent is fine). */
  async delete(key: string): Promise<void> {
    await this.request("DELETE", key, { ok: [200, 204, 404] });
  }

  /** Deletes up to 1000 objects in one request; throws when any could not be deleted. */
  async deleteMany(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    if (keys.length > 1000) throw new Error("deleteMany: at most 1000 keys");
    const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
    const xml = `<?xml version="1.0" encoding="UTF-8"?><Delete><Quiet>true</Quiet>` +
      keys.map((k) => `<Object><Key>${esc(k)}</Key></Object>`).join("") + `</Delete>`;
    const body = new TextEncoder().encode(xml);
    const md5 = createHash("md5").update(body).digest("base64");
    const r = await this.request("POST", "", {
      query: "delete=",
      body,
      headers: { "content-md5": md5, "content-type": "application/xml" },
      ok: [200],
    });
    const errors = xmlElements(new TextDecoder().decode(r.body), "Error");
    if (errors.length) {
      const first = errors[0];
      throw new BackyError(
        `${this.where}: could not delete ${errors.length} object(s), first ` +
          `${xmlText(first, "Key")}: ${xmlText(first, "Code")} ${xmlText(first, "Message") ?? ""}`,
      );
    }
  }

  /** Every object under `prefix`, in key order (one request per 1000). */
  async *list(prefix: string, startAfter?: string): AsyncGenerator<S3Object> {
    let token: string | undefined;
    do {
      const q = new URLSearchParams({ "list-type": "2", "encoding-type": "url", prefix });
      if (token) q.set("continuation-token", token);
      else if (startAfter) q.set("start-after", startAfter);
      const r = await this.request("GET", "", { query: q.toString(), ok: [200] });
      const page = parseListing(new TextDecoder().decode(r.body));
      yield* page.objects;
      token = page.next;
    } while (token);
  }

  /** One clear error when the bucket is missing or the credentials are refused. */
  async checkBucket(): Promise<void> {
    const r = await this.request("HEAD", "", { ok: [200, 403, 404, 301, 400] });
    if (r.status === 200) return;
    if (r.status === 404) {
      throw new BackyError(
        `${this.where} does not exist (create it first, e.g. 's3cmd mb s3://${this.ep.bucket}')`,
      );
    }
    if (r.status === 403) {
      // HEAD has no body: ask again with GET for the error code (wrong key or no access).
      const g = await this.request("GET", "", {
        query: "list-type=2&max-keys=0",
        ok: [200, 403, 404],
      });
      const code = xmlText(new TextDecoder().decode(g.body), "Code") ?? "AccessDenied";
      throw new BackyError(`${this.where}: ${credentialProblem(code, this.ep.accessKeyId)}`);
    }
    throw new BackyError(
      `${this.where}: unexpected answer ${r.status} (wrong endpoint or region '${this.ep.region}'?)`,
    );
  }

  private async request(
    method: string,
    key: string,
    opts: { body?: Uint8Array; headers?: Record<string, string>; query?: string; ok: number[] },
  ): Promise<Answer> {
    const path = `/${encodeKey(this.ep.bucket)}${key ? `/${encodeKey(key)}` : ""}`;
    const url = `${this.ep.endpoint.replace(/\/+$/, "")}${path}${
      opts.query ? `?${opts.query}` : ""
    }`;
    const body = opts.body;
    const sha = body ? createHash("sha256").update(body).digest("hex") : EMPTY_SHA256;
    let attempt = 0;
    while (true) {
      attempt++;
      this.requests[method] = (this.requests[method] ?? 0) + 1;
      let answer: Answer | undefined;
      let failure: string;
      try {
        answer = await this.send(method, url, body, {
          ...opts.headers,
          "x-amz-content-sha256": sha,
        });
        if (opts.ok.includes(answer.status)) return answer;
        const text = new TextDecoder().decode(answer.body);
        const code = xmlText(text, "Code") ?? "";
        failure = `${answer.status} ${code || statusText(answer.status)}` +
          (xmlText(text, "Message") ? `: ${xmlText(text, "Message")}` : "");
        if (!isTransient(answer.status, code)) {
          throw new S3Error(
            this.explain(method, key, answer.status, code, failure),
            answer.status,
            code,
          );
        }
      } catch (e) {
        if (e instanceof S3Error) throw e;
        if (answer === undefined) failure = networkProblem(e);
        else throw e;
      }
      if (attempt >= Math.max(1, this.ep.attempts)) {
        throw new S3Error(
          `${this.where}: ${method} ${
            key || "(bucket)"
          } failed after ${attempt} attempt(s): ${failure}`,
          answer?.status ?? 0,
          "Unavailable",
        );
      }
      await this.sleep(backoffMs(attempt));
    }
  }

  private explain(method: string, key: string, status: number, code: string, text: string) {
    if (status === 403 || code === "InvalidAccessKeyId" || code === "SignatureDoesNotMatch") {
      return `${this.where}: ${credentialProblem(code, this.ep.accessKeyId)}`;
    }
    if (code === "NoSuchBucket") return `${this.where} does not exist`;
    return `${this.where}: ${method} ${key || "(bucket)"}: ${text}`;
  }

  private async send(
    method: string,
    url: string,
    body: Uint8Array | undefined,
    headers: Record<string, string>,
  ): Promise<Answer> {
    const signed = await new AwsV4Signer({
      method,
      url,
      headers,
      body: body as BodyInit | undefined,
      accessKeyId: this.ep.accessKeyId,
      secretAccessKey: this.ep.secretAccessKey,
      sessionToken: this.ep.sessionToken,
      service: "s3",
      region: this.ep.region,
    }).sign();
    const res = await fetch(signed.url, {
      method,
      headers: signed.headers,
      body: body as BodyInit | undefined,
      signal: AbortSignal.timeout(120_000),
    });
    const bytes = method === "HEAD" ? new Uint8Array(0) : new Uint8Array(await res.arrayBuffer());
    if (method === "HEAD") await res.body?.cancel();
    const date = Date.parse(res.headers.get("date") ?? "");
    if (!Number.isNaN(date)) this.skew = date - Date.now();
    return { status: res.status, headers: res.headers, body: bytes };
  }
}

function credentialProblem(code: string, keyId: string): string {
  const id = keyId ? `access key '${keyId}'` : "no access key";
  if (code === "InvalidAccessKeyId") return `credentials refused: unknown ${id}`;
  if (code === "SignatureDoesNotMatch") return `credentials refused: wrong secret key for ${id}`;
  return `access denied for ${id} (${
    code || "403"
  }): check the credentials and the bucket's policy`;
}

function networkProblem(e: unknown): string {
  const msg = errorMessage(e);
  if (/refused/i.test(msg)) return "connection refused";
  if (/timed? ?out|TimeoutError/i.test(msg)) return "timed out";
  return msg.replace(/\s+/g, " ").slice(0, 200);
}

function statusText(status: number): string {
  return ({ 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict" } as Record<
    number,
    string
  >)[status] ?? "error";
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
