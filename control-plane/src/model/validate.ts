import { parseDocument } from "yaml";
import { ConfigError, fromZod, type FieldProblem } from "./errors.js";
import { ConfigSchema, type Config } from "./schema.js";

/** Parses YAML (or JSON, which is YAML) text into a validated config, or throws a ConfigError. */
export function parseConfigText(text: string, source = "config"): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      "invalid_yaml",
      `${source} is not valid YAML`,
      doc.errors.map((e) => ({
        field: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "(document)",
        reason: e.message.split("\n")[0]!,
      })),
    );
  }
  return validateConfig(doc.toJS() ?? {});
}

/** Checks shape and meaning: every problem is reported at once, each with its field. */
export function validateConfig(input: unknown): Config {
  const parsed = ConfigSchema.safeParse(input);
  if (!parsed.success) throw fromZod(parsed.error);
  const config = parsed.data;
  const problems = semanticProblems(config);
  if (problems.length > 0)
    throw new ConfigError("invalid_config", "the configuration is not valid", problems);
  return config;
}

function duplicates<T>(items: T[], key: (t: T) => string, where: string, what: string): FieldProblem[] {
  const seen = new Map<string, number>();
  const out: FieldProblem[] = [];
  items.forEach((item, i) => {
    const k = key(item);
    const first = seen.get(k);
    if (first !== undefined)
      out.push({
        field: `${where}[${i}].name`,
        reason: `${what} '${k}' is already defined at ${where}[${first}]`,
      });
    else seen.set(k, i);
  });
  return out;
}

function semanticProblems(config: Config): FieldProblem[] {
  const problems: FieldProblem[] = [
    ...duplicates(config.gateways, (g) => g.name, "gateways", "gateway"),
    ...duplicates(config.upstreams, (u) => u.name, "upstreams", "upstream"),
    ...duplicates(config.routes, (r) => `${r.name}`, "routes", "route"),
  ];
  config.gateways.forEach((g, gi) => {
    problems.push(...duplicates(g.listeners, (l) => l.name, `gateways[${gi}].listeners`, "listener"));
    const ports = new Map<number, number>();
    g.listeners.forEach((l, li) => {
      const other = ports.get(l.port);
      if (other !== undefined) {
        problems.push({
          field: `gateways[${gi}].listeners[${li}].port`,
          reason: `port ${l.port} is already used by listener '${g.listeners[other]!.name}' of this gateway`,
        });
      } else ports.set(l.port, li);
    });
  });
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  const upstreams = new Set(config.upstreams.map((u) => u.name));
  config.routes.forEach((r, ri) => {
    const g = gateways.get(r.gateway);
    if (!g) problems.push({ field: `routes[${ri}].gateway`, reason: `no gateway named '${r.gateway}'` });
    else if (r.listener && !g.listeners.some((l) => l.name === r.listener)) {
      problems.push({
        field: `routes[${ri}].listener`,
        reason: `gateway '${r.gateway}' has no listener named '${r.listener}'`,
      });
    }
    if (!upstreams.has(r.upstream))
      problems.push({ field: `routes[${ri}].upstream`, reason: `no upstream named '${r.upstream}'` });
    if (r.match.pathRegex !== undefined) {
      try {
        new RegExp(r.match.pathRegex);
      } catch (err) {
        problems.push({
          field: `routes[${ri}].match.pathRegex`,
          reason: `not a regular expression: ${(err as Error).message}`,
        });
      }
    }
  });
  return problems;
}
