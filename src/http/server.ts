/**
 * The scheduler's HTTP endpoint on `Deno.serve` (off unless `http-port` is configured):
 * loopback by default; other addresses only with TLS and bearer tokens (the config refuses
 * anything else, and so does this module, should a caller skip the config).
 */
import { BackyError, errorMessage } from "../util/errors.ts";
import type { HttpConfig } from "../config/scheduler_config.ts";
import { parseAddress } from "../config/address.ts";
import type { SchedulerControl } from "../status/control.ts";
import { handle } from "./routes.ts";

/** The subset of a logger the endpoint uses. */
export interface HttpLogger {
  info(message: string, properties?: Record<string, unknown>): void;
  warn(message: string, properties?: Record<string, unknown>): void;
}

export interface HttpOptions {
  /** `port` 0 picks a free port per address (tests). */
  config: HttpConfig;
  control: SchedulerControl;
  version: string;
  log?: HttpLogger;
}

export interface HttpServer {
  listening: { hostname: string; port: number }[];
  /** Stops listening and ends open connections. */
  close(): Promise<void>;
}

function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}

/** Starts listening on every address; BackyError if one cannot be used. */
export async function startHttp(opts: HttpOptions): Promise<HttpServer> {
  const { config, log } = opts;
  const tls = config.tlsCert && config.tlsKey
    ? {
      cert: await readPem(config.tlsCert, "http-tls-cert"),
      key: await readPem(config.tlsKey, "http-tls-key"),
    }
    : undefined;
  const hostnames = config.addrs.map((addr) => {
    const parsed = parseAddress(addr);
    if (!parsed) throw new BackyError(`HTTP endpoint: not an IP address: ${addr}`);
    if (!parsed.loopback && (!tls || Object.keys(config.tokens).length === 0)) {
      throw new BackyError(
        `HTTP endpoint: refusing non-loopback address ${addr} without TLS and tokens`,
      );
    }
    return parsed.hostname;
  });
  const ctx = { control: opts.control, version: opts.version, tokens: config.tokens };
  const servers: Deno.HttpServer<Deno.NetAddr>[] = [];
  const listening: { hostname: string; port: number }[] = [];
  for (const hostname of new Set(hostnames)) {
    try {
      const server = Deno.serve({
        hostname,
        port: config.port,
        ...(tls ?? {}),
        onListen: () => {},
        onError: (e) => {
          log?.warn("HTTP endpoint: request failed", { error: errorMessage(e) });
          return new Response("internal error\n", { status: 500 });
        },
      }, async (req, info) => {
        const { response, client } = await handle(req, ctx);
        if (response.status === 401) {
          log?.warn("HTTP endpoint: request refused (no valid token)", {
            peer: info.remoteAddr.hostname,
            method: req.method,
            path: new URL(req.url).pathname,
          });
        } else if (req.method === "POST") {
          log?.info("HTTP endpoint: request", {
            client: client ?? "-",
            peer: info.remoteAddr.hostname,
            method: req.method,
            path: new URL(req.url).pathname,
            status: response.status,
          });
        }
        return response;
      });
      servers.push(server);
      listening.push({ hostname: server.addr.hostname, port: server.addr.port });
    } catch (e) {
      await Promise.all(servers.map((s) => s.shutdown()));
      throw new BackyError(
        `HTTP endpoint: cannot listen on ${hostPort(hostname, config.port)}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
  }
  for (const l of listening) {
    log?.info("HTTP endpoint listening", {
      address: `${tls ? "https" : "http"}://${hostPort(l.hostname, l.port)}`,
      auth: Object.keys(config.tokens).length ? "bearer token" : "none",
    });
  }
  return {
    listening,
    async close() {
      await Promise.all(servers.map((s) => s.shutdown().catch(() => {})));
    },
  };
}

async function readPem(path: string, key: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new BackyError(`HTTP endpoint: cannot read ${key} ${path}: ${errorMessage(e)}`);
  }
}
