import { revisionLabel, table, when } from "./format.js";

interface FieldProblem {
  field: string;
  reason: string;
}

/** `GET /api/v1/status` as the CLI reads it. */
export interface StatusBody {
  config: {
    revision: number;
    hash?: string;
    lastGoodRevision?: number;
    store: string;
    file?: {
      path: string;
      watching: boolean;
      debounceMs: number;
      lastApplied?: { revision: number; hash: string; at: string };
      lastRefused?: { at: string; code: string; message: string; details: FieldProblem[] };
      refused: boolean;
    };
  };
  nodes: {
    id: string;
    group: string;
    version?: string;
    protocol: string;
    appliedConfig?: { revision: number | null; hash: string };
    types: Record<string, { lastNack?: { at: string; message: string } }>;
  }[];
  /** Who verifies each route's callers: Envoy alone (`native`), ext-authz (and why), or nobody. */
  routes?: { route: string; gateway: string; auth: "native" | "ext_authz" | "none"; reason?: string }[];
  /** The keys the control plane fetches for providers that publish them. */
  jwks?: {
    provider: string;
    uri: string;
    state: string;
    keys?: number;
    fetchedAt?: string;
    error?: string;
    nextFetchAt?: string;
  }[];
}

/** The config file's part of the status: what it applied last and, above all, what it refused. */
function fileLines(file: NonNullable<StatusBody["config"]["file"]>, now: number): string[] {
  const lines = [
    file.watching
      ? `config file ${file.path}: watched, the source of truth (admin API writes are refused; an edit is read ${file.debounceMs} ms after the file's last change)`
      : `config file ${file.path}: read at start only`,
  ];
  const applied = file.lastApplied;
  lines.push(
    applied
      ? `  last applied: revision ${revisionLabel(applied.revision, applied.hash)} at ${when(applied.at, now)}`
      : "  not applied (the store already held a config at start)",
  );
  const refused = file.lastRefused;
  if (refused) {
    lines.push(
      file.refused
        ? `  REFUSED edit at ${when(refused.at, now)}: still serving ${applied ? `revision ${applied.revision}` : "the last good config"}`
        : `  last refused edit at ${when(refused.at, now)} (a later edit was applied)`,
      `    ${refused.code}: ${refused.message}`,
      ...refused.details.map((d) => `    ${d.field}: ${d.reason}`),
    );
  }
  return lines;
}

/** The newest NACK a node sent, over all its types. */
function lastNack(n: StatusBody["nodes"][number]): { at: string; message: string } | undefined {
  return Object.values(n.types)
    .map((t) => t.lastNack)
    .filter((x): x is { at: string; message: string } => x !== undefined)
    .sort((a, b) => (a.at < b.at ? 1 : -1))[0];
}

/** `portico status`: the config, the file source when there is one, then every node. */
export function statusText(body: StatusBody, now = Date.now()): string {
  const c = body.config;
  const lines = [
    `config revision ${revisionLabel(c.revision, c.hash)}, store ${c.store}; last accepted by the whole fleet: ${
      c.lastGoodRevision === undefined ? "-" : `revision ${c.lastGoodRevision}`
    }`,
    ...(c.file ? fileLines(c.file, now) : []),
  ];
  const rows = [["NODE", "GROUP", "ENVOY", "PROTOCOL", "APPLIED REVISION", "LAST NACK"]];
  for (const n of body.nodes) {
    const nack = lastNack(n);
    rows.push([
      n.id,
      n.group,
      n.version ?? "",
      n.protocol,
      revisionLabel(n.appliedConfig?.revision, n.appliedConfig?.hash),
      nack ? nack.message.slice(0, 80) : "",
    ]);
  }
  lines.push(body.nodes.length ? table(rows) : "no node is connected");
  const authed = (body.routes ?? []).filter((r) => r.auth !== "none");
  if (authed.length) {
    const routeRows = [["ROUTE", "GATEWAY", "AUTH", "WHY NOT NATIVE"]];
    for (const r of authed) routeRows.push([r.route, r.gateway, r.auth, r.reason ?? ""]);
    lines.push("", table(routeRows));
  }
  for (const k of body.jwks ?? []) {
    const held = k.keys === undefined ? "no keys" : `${k.keys} key${k.keys === 1 ? "" : "s"}`;
    const fetched = k.fetchedAt ? `, fetched ${when(k.fetchedAt, now)}` : "";
    const failing = k.error ? `; failing: ${k.error}` : "";
    lines.push(`jwks ${k.provider} (${k.uri}): ${held}${fetched}${failing}`);
  }
  return lines.join("\n");
}
