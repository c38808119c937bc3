/**
 * The scheduler's HTTP API, free of sockets: a Request in, a Response out, so every route and
 * every refusal can be tested exactly. Every path needs a bearer token when tokens are
 * configured (401 otherwise, unknown paths included, so nothing is revealed unauthenticated).
 * Tokens are compared in constant time and never logged.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { SchedulerControl } from "../status/control.ts";
import { jobJson } from "../status/jobstatus.ts";
import { nameFilter } from "../util/glob.ts";
import { errorMessage } from "../util/errors.ts";
import { METRICS_CONTENT_TYPE, metricsText } from "./metrics.ts";

export interface ApiContext {
  control: SchedulerControl;
  version: string;
  /** Client name -> token; empty: no authentication. */
  tokens: Record<string, string>;
}

/** A response plus who asked, for the log line (the client's name, never its token). */
export interface Handled {
  response: Response;
  client?: string;
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function digest(s: string): Uint8Array {
  return createHash("sha256").update(s, "utf8").digest();
}

/** The client whose token `header` carries, or undefined. Hashing first evens the lengths. */
export function authenticate(
  header: string | null,
  tokens: Record<string, string>,
): string | undefined {
  if (header === null) return undefined;
  const m = /^Bearer +(\S+) *$/i.exec(header.length > 1024 ? "" : header);
  if (!m) return undefined;
  const offered = digest(m[1]);
  let found: string | undefined;
  for (const [client, token] of Object.entries(tokens)) {
    // No early exit: the time taken does not depend on which token matched.
    if (timingSafeEqual(offered, digest(token)) && found === undefined) found = client;
  }
  return found;
}

function methodNotAllowed(allow: string): Response {
  return json(405, { error: `method not allowed (allowed: ${allow})` }, { allow });
}

/** Answers one request. Never throws: a failing control call is a 500 with its message. */
export async function handle(req: Request, ctx: ApiContext): Promise<Handled> {
  let client: string | undefined;
  if (Object.keys(ctx.tokens).length > 0) {
    client = authenticate(req.headers.get("authorization"), ctx.tokens);
    if (client === undefined) {
      return {
        response: json(401, { error: "missing or invalid bearer token" }, {
          "www-authenticate": 'Bearer realm="backy"',
        }),
      };
    }
  }
  try {
    return { response: await route(req, ctx), client };
  } catch (e) {
    return { response: json(500, { error: errorMessage(e) }), client };
  }
}

async function route(req: Request, ctx: ApiContext): Promise<Response> {
  const url = new URL(req.url);
  let parts: string[];
  try {
    parts = url.pathname.split("/").slice(1).map(decodeURIComponent);
  } catch {
    return json(400, { error: "malformed path" });
  }
  const get = req.method === "GET" || req.method === "HEAD";
  if (parts.length === 1 && parts[0] === "metrics") {
    if (!get) return methodNotAllowed("GET");
    const text = await metricsText(await ctx.control.jobs(), ctx.control.workers(), ctx.version);
    return new Response(text, { headers: { "content-type": METRICS_CONTENT_TYPE } });
  }
  if (parts[0] !== "v1") return json(404, { error: "not found" });
  if (parts.length === 2 && parts[1] === "status") {
    if (!get) return methodNotAllowed("GET");
    let filter: ((name: string) => boolean) | undefined;
    const pattern = url.searchParams.get("filter");
    if (pattern !== null) {
      try {
        filter = nameFilter(pattern);
      } catch (e) {
        return json(400, { error: errorMessage(e) });
      }
    }
    const jobs = (await ctx.control.jobs()).filter((j) => !filter || filter(j.job))
      .sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : 0));
    return json(200, {
      version: ctx.version,
      workers: ctx.control.workers(),
      jobs: jobs.map(jobJson),
    });
  }
  if (parts[1] === "jobs" && parts.length === 3) {
    if (!get) return methodNotAllowed("GET");
    const job = (await ctx.control.jobs()).find((j) => j.job === parts[2]);
    return job ? json(200, jobJson(job)) : json(404, { error: `no such job: ${parts[2]}` });
  }
  if (parts[1] === "jobs" && parts.length === 4 && parts[3] === "run") {
    if (req.method !== "POST") return methodNotAllowed("POST");
    return ctx.control.runJob(parts[2])
      ? json(202, { triggered: parts[2] })
      : json(404, { error: `no such job: ${parts[2]}` });
  }
  return json(404, { error: "not found" });
}
