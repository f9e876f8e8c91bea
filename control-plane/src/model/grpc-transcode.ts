/**
 * The model side of REST to gRPC transcoding: a `protoDescriptors` resource becomes a checked
 * FileDescriptorSet, and a route's `grpcTranscode` must name services that set holds and send
 * them to a gRPC upstream. Building a set takes tens of milliseconds and every write validates
 * the whole config, so sets are remembered by content.
 */
import { createHash } from "node:crypto";
import { compileProtoFiles, type SourceProblem } from "../descriptors/compile.js";
import { inspectDescriptorSet, type DescriptorSummary } from "../descriptors/inspect.js";
import type { FieldProblem } from "./errors.js";
import type { Config, ProtoDescriptors } from "./schema.js";

/** Largest upload (the `.proto` sources together, or the decoded set) and largest built set. */
export const MAX_DESCRIPTOR_BYTES = 1_048_576;
export const MAX_PROTO_FILES = 500;

export type BuiltDescriptors =
  { ok: true; bytes: Uint8Array; summary: DescriptorSummary } | { ok: false; problems: FieldProblem[] };

const MEMO_SIZE = 32;
const memo = new Map<string, BuiltDescriptors>();

function fileField(name: string): string {
  return `files[${JSON.stringify(name)}]`;
}

/** Problems of the upload itself, with fields relative to the resource. */
function build(res: ProtoDescriptors): BuiltDescriptors {
  const fail = (problems: FieldProblem[]): BuiltDescriptors => ({ ok: false, problems });
  let bytes: Uint8Array;
  let where: (p: SourceProblem) => FieldProblem;
  if (res.files !== undefined) {
    const names = Object.keys(res.files);
    if (names.length === 0) return fail([{ field: "files", reason: "give at least one .proto file" }]);
    if (names.length > MAX_PROTO_FILES) {
      return fail([{ field: "files", reason: `at most ${MAX_PROTO_FILES} files` }]);
    }
    const size = names.reduce((n, k) => n + Buffer.byteLength(res.files![k]!), 0);
    if (size > MAX_DESCRIPTOR_BYTES) {
      return fail([
        { field: "files", reason: `the sources hold ${size} bytes; at most ${MAX_DESCRIPTOR_BYTES}` },
      ]);
    }
    const compiled = compileProtoFiles(res.files);
    // A problem in a provided file (google/api/…) is reported where it was imported from: the upload.
    where = (p) => ({
      field: p.file in res.files! ? fileField(p.file) : "files",
      reason: p.file in res.files! || !p.file ? p.reason : `${p.file}: ${p.reason}`,
    });
    if (!compiled.ok) return fail(compiled.problems.map(where));
    bytes = compiled.bytes;
  } else {
    bytes = Buffer.from(res.descriptorSet ?? "", "base64");
    if (bytes.length > MAX_DESCRIPTOR_BYTES) {
      return fail([
        {
          field: "descriptorSet",
          reason: `the set holds ${bytes.length} bytes; at most ${MAX_DESCRIPTOR_BYTES}`,
        },
      ]);
    }
    where = (p) => ({ field: "descriptorSet", reason: p.file ? `${p.file}: ${p.reason}` : p.reason });
  }
  if (bytes.length > MAX_DESCRIPTOR_BYTES) {
    return fail([
      {
        field: "files",
        reason: `the built set holds ${bytes.length} bytes; at most ${MAX_DESCRIPTOR_BYTES}`,
      },
    ]);
  }
  const inspected = inspectDescriptorSet(bytes);
  if (!inspected.ok) return fail(inspected.problems.map(where));
  return { ok: true, bytes, summary: inspected.summary };
}

/** The resource's FileDescriptorSet and services, or its problems (fields relative to the resource). */
export function buildDescriptors(res: ProtoDescriptors): BuiltDescriptors {
  const key = createHash("sha256")
    .update(JSON.stringify([res.files ? Object.entries(res.files).sort() : null, res.descriptorSet ?? null]))
    .digest("hex");
  let built = memo.get(key);
  if (built) {
    // Most recently used last, so the oldest is the one dropped.
    memo.delete(key);
  } else {
    built = build(res);
  }
  memo.set(key, built);
  if (memo.size > MEMO_SIZE) memo.delete(memo.keys().next().value!);
  return built;
}

export function grpcTranscodeProblems(config: Config): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const sets = new Map<string, BuiltDescriptors>();
  config.protoDescriptors.forEach((res, i) => {
    const built = buildDescriptors(res);
    sets.set(res.name, built);
    if (!built.ok) {
      for (const p of built.problems)
        problems.push({ field: `protoDescriptors[${i}].${p.field}`, reason: p.reason });
    }
  });
  const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
  config.routes.forEach((r, ri) => {
    const t = r.grpcTranscode;
    if (!t) return;
    const at = `routes[${ri}]`;
    if (r.upstream === undefined && r.upstreams === undefined) {
      problems.push({
        field: `${at}.grpcTranscode`,
        reason: "transcoding needs the route to have upstreams",
      });
    }
    const targets: [string, string | undefined][] = [
      [`${at}.upstream`, r.upstream],
      ...(r.upstreams ?? []).map((w, wi): [string, string] => [`${at}.upstreams[${wi}].name`, w.name]),
      [`${at}.fallback.upstream`, r.fallback?.upstream],
    ];
    for (const [field, name] of targets) {
      const u = name === undefined ? undefined : upstreams.get(name);
      if (u && u.protocol !== "grpc") {
        problems.push({
          field,
          reason: `upstream '${u.name}' must have protocol grpc to receive transcoded calls`,
        });
      }
    }
    const built = sets.get(t.descriptors);
    // A missing set is a reference problem, and a broken one is reported on the set itself.
    if (!built?.ok) return;
    t.services.forEach((s, si) => {
      if (!built.summary.services.has(s)) {
        const known = [...built.summary.services.keys()].sort();
        problems.push({
          field: `${at}.grpcTranscode.services[${si}]`,
          reason: `proto descriptors '${t.descriptors}' have no service '${s}' (${
            known.length ? `services: ${known.join(", ")}` : "they define no service"
          })`,
        });
      }
    });
  });
  return problems;
}
