// The `portico` command. It starts on every call, so it loads only what the command needs: the
// YAML library, the config schema and route ordering are imported by the commands that use them.
import fs from "node:fs";
import { parseArgs } from "node:util";
import { apiError, CliError, client, EXIT, type Client, type Io } from "./client.js";
import { describeChange, fieldChanges, type FieldChange } from "./field-diff.js";
import { revisionLabel, table } from "./format.js";
import { statusText, type StatusBody } from "./status.js";

export { EXIT } from "./client.js";

const USAGE = `portico — the Portico admin CLI

  portico apply -f FILE [--wait] [--timeout 30s]   apply a whole config (YAML or JSON)
  portico diff -f FILE                             what apply would change, field by field (exit 1 if anything)
  portico get KIND [NAME] [-o json|yaml]           list resources, or show one (routes in match order)
  portico status                                   the config, its file source, every connected node
  portico revisions                                the revision history (also: history, log)
  portico rollback REVISION [--wait]               commit an earlier revision again (also: revert)
  portico export [-o FILE]                         the whole config as YAML

  --server URL   admin API (env PORTICO_SERVER, default http://127.0.0.1:9000)
  --token TOKEN  bearer token (env PORTICO_TOKEN)
Exit codes: 0 ok, 1 diff has changes, 2 usage, 3 not applied by every node, 4 refused, 5 unreachable.`;

const COMMANDS = ["apply", "diff", "get", "status", "revisions", "rollback", "export"] as const;
type Command = (typeof COMMANDS)[number];

/** The names people reach for first, from git, kubectl and other tools. */
const ALIASES: Record<string, Command> = {
  history: "revisions",
  log: "revisions",
  revert: "rollback",
  list: "get",
  ls: "get",
};

/** Edit distance, to suggest the command a typo meant. */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++)
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

function commandOf(name: string): Command {
  if ((COMMANDS as readonly string[]).includes(name)) return name as Command;
  const alias = ALIASES[name];
  if (alias) return alias;
  const near = [...COMMANDS, ...Object.keys(ALIASES)]
    .map((c) => ({ c, d: distance(name, c) }))
    .filter((x) => x.d <= 2)
    .sort((a, b) => a.d - b.d)[0];
  throw new CliError(
    EXIT.usage,
    `unknown command '${name}'${near ? ` (did you mean '${near.c}'?)` : ""}\n\n${USAGE}`,
  );
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

async function toYaml(value: unknown): Promise<string> {
  const { stringify } = await import("yaml");
  return stringify(value);
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

/** Warnings a write was answered with (a route another one takes some requests from). */
function printWarnings(io: Io, body: { warnings?: { field: string; reason: string }[] }): void {
  for (const w of body.warnings ?? []) io.err(`warning: ${w.field}: ${w.reason}`);
}

/** While a write waits for the fleet, show each node as it reaches the new config. */
function watchProgress(api: Client, io: Io): () => void {
  const seen = new Map<string, string>();
  const timer = setInterval(() => {
    void api
      .get("/api/v1/status")
      .then((body: StatusBody) => {
        for (const n of body.nodes) {
          const label = revisionLabel(n.appliedConfig?.revision, n.appliedConfig?.hash);
          if (seen.has(n.id) && seen.get(n.id) !== label) io.err(`  … ${n.id} now runs revision ${label}`);
          seen.set(n.id, label);
        }
      })
      .catch(() => undefined);
  }, 250);
  return () => clearInterval(timer);
}

interface Change {
  kind: string;
  name: string;
  op: "create" | "update" | "delete";
}

/**
 * The fields behind each update the server reported: the stored config against the file, both with
 * the schema's defaults filled in, so a field left at its default is no difference.
 */
async function updatedFields(
  api: Client,
  text: string,
  updates: Change[],
): Promise<Map<string, FieldChange[]>> {
  const [{ parse }, { ConfigSchema }, { fingerprintSecrets }, stored] = await Promise.all([
    import("yaml"),
    import("../model/schema.js"),
    import("../model/secrets.js"),
    api.get("/api/v1/config") as Promise<Record<string, { name: string }[]>>,
  ]);
  const raw: unknown = parse(text);
  const parsed = ConfigSchema.safeParse(raw);
  // Secrets compare, and show, as their fingerprints: the server never returns them.
  const current = fingerprintSecrets(stored);
  const candidate = fingerprintSecrets(
    JSON.parse(JSON.stringify(parsed.success ? parsed.data : raw)) as typeof current,
  );
  const fields = new Map<string, FieldChange[]>();
  for (const u of updates) {
    const find = (config: typeof current) => config[u.kind]?.find((x) => x.name === u.name);
    fields.set(`${u.kind}/${u.name}`, fieldChanges(find(current), find(candidate)));
  }
  return fields;
}

const SIGN = { create: "+", update: "~", delete: "-" } as const;

async function diff(api: Client, io: Io, file: string | undefined): Promise<number> {
  const text = readFile(file);
  const res = await api.request("PUT", "/api/v1/config?dryRun=true", text, contentTypeOf(file!, text));
  if (res.status !== 200) throw apiError(res);
  const changes = res.json().changes as Change[];
  if (changes.length === 0) {
    io.out("no changes");
    return EXIT.ok;
  }
  const updates = changes.filter((c) => c.op === "update");
  const fields = updates.length ? await updatedFields(api, text, updates) : new Map<string, FieldChange[]>();
  for (const c of changes) {
    const id = `${c.kind}/${c.name}`;
    const changed = fields.get(id) ?? [];
    if (changed.length === 0) io.out(`${SIGN[c.op]} ${id}`);
    for (const f of changed) io.out(`~ ${id}: ${describeChange(f)}`);
  }
  return EXIT.differences;
}

async function get(api: Client, io: Io, args: string[], output: string | undefined): Promise<number> {
  const [kind, name] = args;
  if (!kind) throw new CliError(EXIT.usage, "portico get KIND [NAME]");
  const body = await api.get(
    `/api/v1/${encodeURIComponent(kind)}${name ? `/${encodeURIComponent(name)}` : "?limit=1000"}`,
  );
  if (output === "json") io.out(JSON.stringify(body, null, 2));
  else if (output === "yaml" || name) io.out((await toYaml(name ? body : body.items)).trimEnd());
  else if (kind === "routes") {
    const { routeTable } = await import("./routes-table.js");
    io.out(table(routeTable(body.items)));
  } else {
    const items = body.items as Record<string, unknown>[];
    const cols = [
      "name",
      ...["gateway", "upstream", "consumer", "plan"].filter((c) => items.some((i) => i[c] !== undefined)),
    ];
    io.out(
      table([cols.map((c) => c.toUpperCase()), ...items.map((i) => cols.map((c) => String(i[c] ?? "")))]),
    );
  }
  return EXIT.ok;
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
  const [name, ...args] = positionals;
  if (values.help || !name) {
    io.out(USAGE);
    return values.help ? EXIT.ok : EXIT.usage;
  }
  const api = client(values.server!, values.token);
  const waitQuery = values.wait ? `?wait=applied&timeout=${encodeURIComponent(values.timeout!)}` : "";
  try {
    switch (commandOf(name)) {
      case "apply": {
        const text = readFile(values.file);
        const stop = values.wait ? watchProgress(api, io) : () => undefined;
        const res = await api
          .request("PUT", `/api/v1/config${waitQuery}`, text, contentTypeOf(values.file!, text))
          .finally(stop);
        if (res.status !== 200) throw apiError(res);
        const body = res.json();
        for (const c of body.changes as Change[]) io.out(`${c.op.padEnd(6)} ${c.kind}/${c.name}`);
        printWarnings(io, body);
        io.out(body.changed ? `revision ${body.revision}` : `unchanged (revision ${body.revision})`);
        return body.rollout ? printRollout(io, body.rollout) : EXIT.ok;
      }
      case "diff":
        return await diff(api, io, values.file);
      case "get":
        return await get(api, io, args, values.output);
      case "status":
        io.out(statusText(await api.get("/api/v1/status")));
        return EXIT.ok;
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
        const yaml = await toYaml(await api.get("/api/v1/config"));
        if (values.output) fs.writeFileSync(values.output, yaml);
        else io.out(yaml.trimEnd());
        return EXIT.ok;
      }
      case "revisions": {
        const rows = [["REVISION", "CREATED", "AUTHOR", "MESSAGE"]];
        for (const r of (await api.get("/api/v1/revisions")).items as any[])
          rows.push([revisionLabel(r.number, r.hash), r.createdAt, r.author ?? "", r.message ?? ""]);
        io.out(table(rows));
        return EXIT.ok;
      }
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
