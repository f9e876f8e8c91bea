import fs from "node:fs";
import { parseArgs } from "node:util";
import { stringify } from "yaml";
import { inMatchOrder, rankOf } from "../model/route-order.js";
import type { Route } from "../model/schema.js";

/**
 * Exit codes: 0 done (for diff: no differences), 1 diff found differences, 2 usage error,
 * 3 written but not applied by every node (timeout or NACK), 4 refused by the API, 5 server
 * unreachable.
 */
export const EXIT = { ok: 0, differences: 1, usage: 2, notApplied: 3, refused: 4, unreachable: 5 } as const;

const USAGE = `portico — the Portico admin CLI

  portico apply -f FILE [--wait] [--timeout 30s]   apply a whole config (YAML or JSON)
  portico diff -f FILE                             what apply would change (exit 1 if anything)
  portico get KIND [NAME] [-o json|yaml]           list resources, or show one (routes in match order)
  portico status                                   every connected node and what it applied
  portico rollback REVISION [--wait]               commit an earlier revision again
  portico export [-o FILE]                         the whole config as YAML
  portico revisions                                the revision history

  --server URL   admin API (env PORTICO_SERVER, default http://127.0.0.1:9000)
  --token TOKEN  bearer token (env PORTICO_TOKEN)
Exit codes: 0 ok, 1 diff has changes, 2 usage, 3 not applied by every node, 4 refused, 5 unreachable.`;

class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

interface Client {
  request(
    method: string,
    path: string,
    body?: string,
    contentType?: string,
  ): Promise<{ status: number; text: string; json(): any }>;
}

function client(server: string, token: string | undefined): Client {
  return {
    async request(method, path, body, contentType) {
      let res: globalThis.Response;
      try {
        res = await fetch(new URL(path, server), {
          method,
          headers: {
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(contentType ? { "content-type": contentType } : {}),
            accept: "application/json",
          },
          body,
        });
      } catch (err) {
        throw new CliError(
          EXIT.unreachable,
          `cannot reach ${server}: ${(err as Error).cause ?? (err as Error).message}`,
        );
      }
      const text = await res.text();
      return {
        status: res.status,
        text,
        json: () => JSON.parse(text),
      };
    },
  };
}

function apiError(res: { status: number; text: string }): CliError {
  try {
    const body = JSON.parse(res.text) as {
      code: string;
      message: string;
      details?: { field: string; reason: string }[];
    };
    const lines = [
      `error ${res.status} ${body.code}: ${body.message}`,
      ...(body.details ?? []).map((d) => `  ${d.field}: ${d.reason}`),
    ];
    return new CliError(EXIT.refused, lines.join("\n"));
  } catch {
    return new CliError(EXIT.refused, `error ${res.status}: ${res.text.slice(0, 500)}`);
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** A route's match in a few words: `= /path`, `/prefix*`, `~ regex`, then its other conditions. */
function matchSummary(r: Route): string {
  const m = r.match;
  const path =
    m.path !== undefined
      ? `= ${m.path}`
      : m.pathPrefix !== undefined
        ? `${m.pathPrefix}*`
        : `~ ${m.pathRegex}`;
  const cond = (c: NonNullable<Route["match"]["headers"]>[number], sep: string) =>
    `${c.invert ? "!" : ""}${c.name}${
      c.exact !== undefined
        ? `${sep}${c.exact}`
        : c.prefix !== undefined
          ? `${sep}${c.prefix}*`
          : c.regex !== undefined
            ? `~${c.regex}`
            : c.present
              ? ""
              : " absent"
    }`;
  return [
    path,
    ...(m.methods ? [m.methods.join(",")] : []),
    ...(m.host ? [`host ${m.host}`] : []),
    ...(m.headers ?? []).map((h) => cond(h, ": ")),
    ...(m.query ?? []).map((q) => `?${cond(q, "=")}`),
    ...(r.listener ? [`listener ${r.listener}`] : []),
    ...(r.priority ? [`priority ${r.priority}`] : []),
  ].join("  ");
}

/**
 * Routes as Envoy tries them: per gateway, in match order (the host's own routes before those for
 * every host, then the model's order); ORDER counts within the gateway.
 */
function routeTable(items: Route[]): string[][] {
  const gateways = [...new Set(items.map((r) => r.gateway))].sort();
  const rows = [["ORDER", "NAME", "GATEWAY", "MATCH", "UPSTREAM"]];
  for (const g of gateways) {
    const ordered = inMatchOrder(
      items.filter((r) => r.gateway === g),
      (r) => rankOf({ ...r, kind: "routes", index: 0, template: false, priority: r.priority ?? 0 }),
    );
    ordered.forEach((r, i) =>
      rows.push([
        String(i + 1),
        r.name,
        g,
        matchSummary(r),
        r.upstream ??
          r.upstreams?.map((w) => `${w.name}:${w.weight}`).join(",") ??
          (r.redirect ? "(redirect)" : "(direct)"),
      ]),
    );
  }
  return rows;
}

/** Warnings a write was answered with (a route another one takes some requests from). */
function printWarnings(io: Io, body: { warnings?: { field: string; reason: string }[] }): void {
  for (const w of body.warnings ?? []) io.err(`warning: ${w.field}: ${w.reason}`);
}

function contentTypeOf(file: string, text: string): string {
  return file.endsWith(".json") || text.trimStart().startsWith("{") ? "application/json" : "application/yaml";
}

function readFile(file: string | undefined): string {
  if (!file) throw new CliError(EXIT.usage, "give the config file with -f FILE");
  try {
    return file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(EXIT.usage, `cannot read ${file}: ${(err as Error).message}`);
  }
}

interface Rollout {
  applied: boolean;
  timedOut: boolean;
  nodes: { id: string; group: string; state: string; error?: string }[];
}

function printRollout(io: Io, rollout: Rollout): number {
  for (const n of rollout.nodes) {
    io.out(`  ${n.state.padEnd(8)} ${n.id} (${n.group})${n.error ? `: ${n.error}` : ""}`);
  }
  if (rollout.nodes.length === 0) io.out("  no connected node is affected by this change");
  if (rollout.applied) {
    io.out("applied by every affected node");
    return EXIT.ok;
  }
  io.err(rollout.timedOut ? "not applied by every node before the timeout" : "refused by at least one node");
  return EXIT.notApplied;
}

/** While a write waits for the fleet, show each node as it reaches the new config. */
function watchProgress(api: Client, io: Io): () => void {
  const seen = new Map<string, string>();
  const timer = setInterval(() => {
    void api
      .request("GET", "/api/v1/status")
      .then((res) => {
        if (res.status !== 200) return;
        for (const n of res.json().nodes as { id: string; appliedRevision?: string }[]) {
          const key = n.appliedRevision ?? "";
          if (seen.has(n.id) && seen.get(n.id) !== key)
            io.err(`  … ${n.id} moved to snapshot ${key.slice(0, 8)}`);
          seen.set(n.id, key);
        }
      })
      .catch(() => undefined);
  }, 250);
  return () => clearInterval(timer);
}

export async function runCli(
  argv: string[],
  io: Io = { out: console.log, err: console.error },
  env = process.env,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        file: { type: "string", short: "f" },
        output: { type: "string", short: "o" },
        wait: { type: "boolean", default: false },
        timeout: { type: "string", default: "30s" },
        server: { type: "string", default: env.PORTICO_SERVER ?? "http://127.0.0.1:9000" },
        token: { type: "string", default: env.PORTICO_TOKEN },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (err) {
    io.err(`${(err as Error).message}\n\n${USAGE}`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  const [command, ...args] = positionals;
  if (values.help || !command) {
    io.out(USAGE);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const api = client(values.server!, values.token);
  const waitQuery = values.wait ? `?wait=applied&timeout=${encodeURIComponent(values.timeout!)}` : "";
  try {
    switch (command) {
      case "apply": {
        const text = readFile(values.file);
        const stop = values.wait ? watchProgress(api, io) : () => undefined;
        const res = await api
          .request("PUT", `/api/v1/config${waitQuery}`, text, contentTypeOf(values.file!, text))
          .finally(stop);
        if (res.status !== 200) throw apiError(res);
        const body = res.json();
        for (const c of body.changes as { kind: string; name: string; op: string }[])
          io.out(`${c.op.padEnd(6)} ${c.kind}/${c.name}`);
        printWarnings(io, body);
        io.out(body.changed ? `revision ${body.revision}` : `unchanged (revision ${body.revision})`);
        return body.rollout ? printRollout(io, body.rollout) : EXIT.ok;
      }
      case "diff": {
        const text = readFile(values.file);
        const res = await api.request(
          "PUT",
          "/api/v1/config?dryRun=true",
          text,
          contentTypeOf(values.file!, text),
        );
        if (res.status !== 200) throw apiError(res);
        const changes = res.json().changes as { kind: string; name: string; op: string }[];
        const sign = { create: "+", update: "~", delete: "-" } as Record<string, string>;
        for (const c of changes) io.out(`${sign[c.op]} ${c.kind}/${c.name}`);
        if (changes.length === 0) io.out("no changes");
        return changes.length ? EXIT.differences : EXIT.ok;
      }
      case "get": {
        const [kind, name] = args;
        if (!kind) throw new CliError(EXIT.usage, "portico get KIND [NAME]");
        const res = await api.request(
          "GET",
          `/api/v1/${encodeURIComponent(kind)}${name ? `/${encodeURIComponent(name)}` : "?limit=1000"}`,
        );
        if (res.status !== 200) throw apiError(res);
        const body = res.json();
        if (values.output === "json") io.out(JSON.stringify(body, null, 2));
        else if (values.output === "yaml" || name) io.out(stringify(name ? body : body.items).trimEnd());
        else if (kind === "routes") io.out(table(routeTable(body.items as Route[])));
        else {
          const items = body.items as Record<string, unknown>[];
          const cols = [
            "name",
            ...["gateway", "upstream", "consumer", "plan"].filter((c) =>
              items.some((i) => i[c] !== undefined),
            ),
          ];
          io.out(
            table([
              cols.map((c) => c.toUpperCase()),
              ...items.map((i) => cols.map((c) => String(i[c] ?? ""))),
            ]),
          );
        }
        return EXIT.ok;
      }
      case "status": {
        const res = await api.request("GET", "/api/v1/status");
        if (res.status !== 200) throw apiError(res);
        const body = res.json();
        io.out(
          `config revision ${body.config.revision} (last accepted by the whole fleet: ${body.config.lastGoodRevision ?? "-"})`,
        );
        const rows = [["NODE", "GROUP", "ENVOY", "PROTOCOL", "APPLIED", "LAST NACK"]];
        for (const n of body.nodes as any[]) {
          const nack = Object.values(n.types as Record<string, any>)
            .map((t) => t.lastNack)
            .filter(Boolean)
            .sort((a, b) => (a.at < b.at ? 1 : -1))[0];
          rows.push([
            n.id,
            n.group,
            n.version ?? "",
            n.protocol,
            (n.appliedConfigRevision ?? "-").slice(0, 10),
            nack ? nack.message.slice(0, 80) : "",
          ]);
        }
        io.out(table(rows));
        return EXIT.ok;
      }
      case "rollback": {
        const n = Number(args[0]);
        if (!Number.isInteger(n) || n < 1)
          throw new CliError(EXIT.usage, "portico rollback REVISION (a revision number)");
        const res = await api.request("POST", `/api/v1/revisions/${n}/rollback${waitQuery}`);
        if (res.status !== 200) throw apiError(res);
        const body = res.json();
        io.out(`rolled back to revision ${n}: now revision ${body.revision}`);
        return body.rollout ? printRollout(io, body.rollout) : EXIT.ok;
      }
      case "export": {
        const res = await api.request("GET", "/api/v1/config");
        if (res.status !== 200) throw apiError(res);
        const yaml = stringify(res.json());
        if (values.output) fs.writeFileSync(values.output, yaml);
        else io.out(yaml.trimEnd());
        return EXIT.ok;
      }
      case "revisions": {
        const res = await api.request("GET", "/api/v1/revisions");
        if (res.status !== 200) throw apiError(res);
        const rows = [["REVISION", "CREATED", "AUTHOR", "MESSAGE"]];
        for (const r of res.json().items as any[])
          rows.push([String(r.number), r.createdAt, r.author ?? "", r.message ?? ""]);
        io.out(table(rows));
        return EXIT.ok;
      }
      default:
        throw new CliError(EXIT.usage, `unknown command '${command}'\n\n${USAGE}`);
    }
  } catch (err) {
    if (err instanceof CliError) {
      io.err(err.message);
      return err.exitCode;
    }
    throw err;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runCli(process.argv.slice(2));
}
