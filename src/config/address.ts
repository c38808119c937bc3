/**
 * Listen addresses of the scheduler's telnet shell and HTTP endpoint: IP literals only (a
 * host name could resolve to anything, and differently later), classified as loopback or not.
 */

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Canonical IP literal and whether it is loopback; undefined for anything else. */
export function parseAddress(addr: string): { hostname: string; loopback: boolean } | undefined {
  if (addr === "localhost") return { hostname: "127.0.0.1", loopback: true };
  if (IPV4.test(addr)) return { hostname: addr, loopback: addr.startsWith("127.") };
  const bare = addr.startsWith("[") && addr.endsWith("]") ? addr.slice(1, -1) : addr;
  if (!bare.includes(":")) return undefined;
  let hostname: string;
  try {
    hostname = new URL(`http://[${bare}]/`).hostname.slice(1, -1); // URL validates IPv6
  } catch {
    return undefined;
  }
  const mapped = /^::ffff:(\d+)\.\d+\.\d+\.\d+$/.exec(hostname) ??
    /^::ffff:([0-9a-f]{1,4}):[0-9a-f]{1,4}$/.exec(hostname);
  const loopback = hostname === "::1" ||
    (mapped !== null && (mapped[1] === "127" || /^7f[0-9a-f]{2}$/.test(mapped[1])));
  return { hostname, loopback };
}
