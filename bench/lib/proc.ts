// Readings from Linux's /proc, taken from outside the process they describe.
import fs from "node:fs";

/** Resident memory of a process now and at its peak, from /proc/PID/status. */
export function processMemory(pid: number): { rssKiB: number; hwmKiB: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rssKiB: field("VmRSS"), hwmKiB: field("VmHWM") };
}

/** User + system CPU time of a process so far, in µs (from /proc/PID/stat; clock ticks of 10 ms). */
export function processCpuUs(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Established client-side TCP connections to a local port, from the kernel's table. */
export function connectionsTo(port: number): number {
  let n = 0;
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const remPort = parseInt(cols[2]!.split(":")[1] ?? "", 16);
      if (remPort === port && cols[3] === "01") n++;
    }
  }
  return n;
}
