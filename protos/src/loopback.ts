import { BlockList, isIP } from "node:net";

const loopback = new BlockList();
loopback.addSubnet("127.0.0.0", 8, "ipv4");
loopback.addAddress("::1", "ipv6");

/**
 * 127.0.0.0/8, ::1 (bracketed or not, or as `::ffff:127.x.x.x`) and `localhost`: addresses only
 * this host can reach. What every "plaintext only on loopback" rule of Portico's asks.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .replace(/^\[(.*)\]$/, "$1")
    .toLowerCase();
  if (h === "localhost") return true;
  const family = isIP(h);
  if (family === 4) return loopback.check(h, "ipv4");
  if (family === 6) return loopback.check(h, "ipv6") || isMappedLoopback(h);
  return false;
}

/** `::ffff:127.0.0.1`: IPv4 loopback written as IPv6. */
function isMappedLoopback(h: string): boolean {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
  return !!m && loopback.check(m[1]!, "ipv4");
}
