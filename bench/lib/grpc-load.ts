// Fixed-rate (open-loop) gRPC load: calls sent on a schedule whatever the answers are doing, so a
// slow answer shows in the latencies instead of slowing the load down. ghz
// (`go install github.com/bojand/ghz/cmd/ghz@latest`) when it is installed: a Go client whose own
// pauses are small beside the service's; otherwise a Node client in this process.
import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { promisify } from "node:util";
import protobuf from "protobufjs";
import descriptor from "protobufjs/ext/descriptor/index.js";
import { envoyApiDescriptorFile } from "@portico/contract";
import { percentile } from "./stats.js";

const run = promisify(execFile);

export interface LoadResult {
  generator: "ghz" | "node";
  /** Calls answered per second. */
  perSecond: number;
  count: number;
  errors: number;
  p50: number;
  p99: number;
}

/** ghz's path: $GHZ, then PATH, then Go's default bin directory; undefined when none runs. */
export function findGhz(): string | undefined {
  const candidates = [
    process.env.GHZ,
    ...(process.env.PATH ?? "").split(path.delimiter).map((d) => path.join(d, "ghz")),
    path.join(process.env.GOPATH ?? path.join(os.homedir(), "go"), "bin", "ghz"),
  ];
  return candidates.find((c) => c && fs.existsSync(c));
}

/**
 * A protoset (FileDescriptorSet) with `file` from Envoy's compiled API and everything it imports,
 * the well-known types included (the API's descriptor set leaves those to protobufjs), for ghz.
 */
export function writeProtoset(file: string, out: string): string {
  const api = new Map<string, { deps: string[]; bytes: Uint8Array }>();
  const set = protobuf.Reader.create(fs.readFileSync(envoyApiDescriptorFile()));
  while (set.pos < set.len) {
    set.uint32();
    const bytes = set.bytes();
    const head = protobuf.Reader.create(bytes);
    let name = "";
    const deps: string[] = [];
    while (head.pos < head.len) {
      const t = head.uint32();
      if (t === 10) name = head.string();
      else if (t === 26) deps.push(head.string());
      else head.skipType(t & 7);
    }
    api.set(name, { deps, bytes });
  }
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (n: string) => {
    if (seen.has(n)) return;
    seen.add(n);
    for (const d of api.get(n)?.deps ?? []) visit(d);
    order.push(n);
  };
  visit(file);
  const require = createRequire(import.meta.url);
  const protobufjsDir = path.dirname(require.resolve("protobufjs/package.json"));
  const w = protobuf.Writer.create();
  for (const name of order) {
    if (!name.startsWith("google/protobuf/")) {
      const f = api.get(name);
      if (!f) throw new Error(`${name} is not in ${envoyApiDescriptorFile()}`);
      w.uint32(10).bytes(f.bytes);
      continue;
    }
    // One well-known file at a time, so its descriptor comes out alone and can be named.
    const root = new protobuf.Root();
    const descriptorFile = name === "google/protobuf/descriptor.proto";
    root.loadSync(descriptorFile ? path.join(protobufjsDir, name) : name, { keepCase: true });
    const files = (
      root as unknown as { toDescriptor(s: string): { file: Record<string, unknown>[] } }
    ).toDescriptor("proto3").file;
    if (files.length !== 1) throw new Error(`${name} came out as ${files.length} files`);
    const f = { ...files[0]!, name, ...(descriptorFile ? { syntax: "proto2" } : {}) };
    w.uint32(10).bytes(descriptor.FileDescriptorProto.encode(f).finish());
  }
  fs.writeFileSync(out, w.finish());
  return out;
}

/** ghz at `rps` calls a second for `seconds`, messages taken in turn from `messages`. */
export async function ghzLoad(opts: {
  ghz: string;
  protoset: string;
  call: string;
  target: string;
  messages: object[];
  rps: number;
  seconds: number;
  dir: string;
}): Promise<LoadResult> {
  const data = path.join(opts.dir, `ghz-data-${process.pid}.json`);
  fs.writeFileSync(data, JSON.stringify(opts.messages));
  const { stdout } = await run(
    opts.ghz,
    [
      "--insecure",
      "--protoset",
      opts.protoset,
      "--call",
      opts.call,
      "-D",
      data,
      "--rps",
      String(opts.rps),
      // Enough workers that none waits for a free one at this rate, on one connection as Envoy's
      // gRPC client uses.
      "-c",
      String(Math.max(10, Math.ceil(opts.rps / 100))),
      "--connections",
      "1",
      // A count rather than a duration: ghz then waits for every answer instead of cutting the
      // last calls off (which it would count as errors).
      "-n",
      String(Math.round(opts.rps * opts.seconds)),
      "-O",
      "json",
      opts.target,
    ],
    { maxBuffer: 64 * 1024 * 1024, timeout: (opts.seconds + 60) * 1000 },
  );
  const r = JSON.parse(stdout) as {
    count: number;
    rps: number;
    latencyDistribution: { percentage: number; latency: number }[] | null;
    statusCodeDistribution?: Record<string, number>;
  };
  const at = (p: number) => (r.latencyDistribution?.find((d) => d.percentage === p)?.latency ?? NaN) / 1e6;
  const errors = Object.entries(r.statusCodeDistribution ?? {})
    .filter(([code]) => code !== "OK")
    .reduce((n, [, c]) => n + c, 0);
  return { generator: "ghz", perSecond: r.rps, count: r.count, errors, p50: at(50), p99: at(99) };
}

/** The same schedule from this process, with grpc-js: for machines without ghz. */
export async function nodeLoad(
  call: (i: number) => Promise<unknown>,
  rps: number,
  seconds: number,
): Promise<LoadResult> {
  const total = Math.round(rps * seconds);
  const lat: number[] = new Array(total).fill(NaN);
  let errors = 0;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rps;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    // Latency from when the call was due, so a late send counts against the answer.
    pending.push(
      call(i).then(
        () => void (lat[i] = performance.now() - due),
        () => void errors++,
      ),
    );
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - start) / 1000;
  return {
    generator: "node",
    perSecond: (total - errors) / elapsed,
    count: total,
    errors,
    p50: percentile(lat, 50),
    p99: percentile(lat, 99),
  };
}
