import { createHash, randomBytes } from "node:crypto";
import express, { type NextFunction, type Request, type Response } from "express";
import { stringify } from "yaml";
import { ConfigError, fromZod, type FieldProblem } from "../model/errors.js";
import { KIND_NAMES, KINDS, type Config, type Kind } from "../model/schema.js";
import { redactSecrets, restoreSecrets } from "../model/secrets.js";
import { configWarnings, parseYamlText, references, singular } from "../model/validate.js";
import type { ConfigStore } from "../store/types.js";
import type { FleetState } from "../xds/fleet.js";
import type { ConfigService, Rollout, WriteResult } from "./config-service.js";
import { diffConfigs } from "./diff.js";
import { HttpError, notFound } from "./http-error.js";

type Resource = { name: string } & Record<string, unknown>;

export interface ApiDeps {
  service: ConfigService;
  store: ConfigStore;
  fleet: FleetState;
  /**
   * The config file the control plane watches, when it does: it is the source of truth, so every
   * write's answer says that the file's next edit replaces the change.
   */
  watchedFile?: string;
}

interface Warning {
  field: string;
  reason: string;
}

/** What every write's answer warns of besides its own findings. */
function writeWarnings(deps: ApiDeps): Warning[] {
  if (deps.watchedFile === undefined) return [];
  return [
    {
      field: "(config file)",
      reason: `the config file ${deps.watchedFile} is the source of truth (the control plane watches it): its next edit replaces this change; edit the file to keep it`,
    },
  ];
}

/** A strong ETag for one resource: its content hash. */
export function etagOf(value: unknown): string {
  return `"${createHash("sha256").update(JSON.stringify(value)).digest("hex").slice(0, 20)}"`;
}

const revisionEtag = (n: number) => `"rev-${n}"`;

function parseRevisionEtag(header: string): number {
  const m = /^(?:W\/)?"rev-(\d+)"$/.exec(header.trim());
  if (!m)
    throw new HttpError(
      412,
      "precondition_failed",
      `If-Match must be a config ETag such as "rev-12", got ${header}`,
    );
  return Number(m[1]);
}

const WAIT_DEFAULT_MS = 10_000;
const WAIT_MAX_MS = 120_000;

function waitOptions(req: Request): { wait: boolean; timeoutMs: number } {
  const wait = req.query.wait;
  if (wait !== undefined && wait !== "applied") {
    throw new HttpError(400, "bad_request", "wait must be 'applied'", [
      { field: "wait", reason: "unknown value" },
    ]);
  }
  const raw = req.query.timeout;
  let timeoutMs = WAIT_DEFAULT_MS;
  if (raw !== undefined) {
    const m = typeof raw === "string" ? /^(\d{1,9})(ms|s)?$/.exec(raw) : null;
    if (!m) {
      throw new HttpError(400, "bad_request", "timeout must look like 5s or 500ms", [
        { field: "timeout", reason: "not a duration" },
      ]);
    }
    timeoutMs = Number(m[1]) * (m[2] === "ms" ? 1 : 1000);
  }
  return { wait: wait === "applied", timeoutMs: Math.min(timeoutMs, WAIT_MAX_MS) };
}

async function rolloutFor(deps: ApiDeps, req: Request, result: WriteResult): Promise<Rollout | undefined> {
  const { wait, timeoutMs } = waitOptions(req);
  if (!wait) return undefined;
  return deps.service.waitApplied(result, timeoutMs);
}

/** The headers of every write's answer; returns the warnings its body lists with its own. */
function writeHeaders(deps: ApiDeps, res: Response, result: WriteResult, rollout?: Rollout): Warning[] {
  res.setHeader("Portico-Revision", String(result.revision.number));
  if (rollout) res.setHeader("Portico-Applied", String(rollout.applied));
  const warnings = writeWarnings(deps);
  for (const w of warnings) res.appendHeader("Warning", `299 portico ${JSON.stringify(w.reason)}`);
  return warnings;
}

function kindOf(req: Request): Kind {
  const kind = req.params.kind as Kind;
  if (!KIND_NAMES.includes(kind))
    throw new HttpError(
      404,
      "not_found",
      `no resource kind '${req.params.kind}'; kinds: ${KIND_NAMES.join(", ")}`,
    );
  return kind;
}

function find(config: Config, kind: Kind, name: string): { index: number; item?: Resource } {
  const list = config[kind] as Resource[];
  const index = list.findIndex((x) => x.name === name);
  return { index, item: index >= 0 ? list[index] : undefined };
}

/** Checks If-Match / If-None-Match against the resource's current state, as reads show it. */
function checkPreconditions(req: Request, current: Resource | undefined): void {
  const ifMatch = req.header("if-match");
  const ifNoneMatch = req.header("if-none-match");
  if (ifMatch !== undefined) {
    if (!current)
      throw new HttpError(412, "precondition_failed", "If-Match given but the resource does not exist");
    const tags = ifMatch.split(",").map((t) => t.trim().replace(/^W\//, ""));
    if (!tags.includes("*") && !tags.includes(etagOf(current))) {
      throw new HttpError(
        412,
        "precondition_failed",
        "the resource changed since it was read (ETag mismatch)",
      );
    }
  }
  if (ifNoneMatch?.trim() === "*" && current) {
    throw new HttpError(412, "precondition_failed", "the resource already exists (If-None-Match: *)");
  }
}

/** Validates one resource's shape alone, so errors name fields relative to the body. */
function parseResource(kind: Kind, body: unknown): Resource {
  const parsed = KINDS[kind].safeParse(body);
  if (!parsed.success) throw fromZod(parsed.error, `the ${singular(kind)} is not valid`);
  return parsed.data as Resource;
}

/** Re-words whole-config errors about the resource being written relative to that resource. */
function relativeTo(err: unknown, kind: Kind, index: number): unknown {
  if (!(err instanceof ConfigError)) return err;
  const prefix = `${kind}[${index}]`;
  const details: FieldProblem[] = err.details.map((d) =>
    d.field === prefix || d.field.startsWith(`${prefix}.`)
      ? { field: d.field.slice(prefix.length + 1) || "(resource)", reason: d.reason }
      : d,
  );
  return new ConfigError(err.code, err.message.split(":")[0]!, details);
}

function requireJson(req: Request): void {
  if (!req.is("application/json")) {
    throw new HttpError(415, "unsupported_media_type", "send the resource as application/json");
  }
}

function referrersOf(config: Config, kind: Kind, name: string): string[] {
  return references(config)
    .filter((r) => r.to.kind === kind && r.to.name === name)
    .map((r) => `${singular(r.from.kind)} '${r.from.name}' (${r.from.field})`);
}

const asyncRoute =
  (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) =>
    fn(req, res).catch(next);

const author = (req: Request) => (req as { principal?: string }).principal;

/** `/api/v1`: resources, whole-config apply/export, revisions, rollback. */
export function apiRouter(deps: ApiDeps): express.Router {
  const r = express.Router();
  const { service } = deps;
  // Secrets are write-only: every read shows their fingerprint instead.
  const shown = <T>(value: T, kind?: Kind): T =>
    redactSecrets(value, (fp) => deps.store.secretCreatedAt?.(fp), kind);

  // Query parameters of a write are checked before anything is written: a bad ?wait must not
  // leave a committed change behind a 400.
  r.use((req, _res, next) => {
    if (req.method === "GET" || req.method === "HEAD") return next();
    try {
      waitOptions(req);
      const dryRun = req.query.dryRun;
      if (dryRun !== undefined && dryRun !== "true" && dryRun !== "false") {
        throw new HttpError(400, "bad_request", "dryRun must be true or false", [
          { field: "dryRun", reason: "not a boolean" },
        ]);
      }
      next();
    } catch (err) {
      next(err);
    }
  });

  r.get(
    "/config",
    asyncRoute(async (req, res) => {
      const { config: stored, number } = await service.current();
      const config = shown(stored);
      res.setHeader("ETag", revisionEtag(number));
      if (
        req.accepts(["application/yaml", "application/json"]) === "application/json" &&
        !req.accepts("application/yaml")
      ) {
        res.json(config);
        return;
      }
      res.type("application/yaml").send(stringify(config));
    }),
  );

  r.put(
    "/config",
    express.text({
      type: ["application/yaml", "application/x-yaml", "text/yaml", "text/plain", "application/json"],
      limit: "4mb",
    }),
    asyncRoute(async (req, res) => {
      if (typeof req.body !== "string") {
        throw new HttpError(
          415,
          "unsupported_media_type",
          "send the config as application/yaml or application/json",
        );
      }
      // A config exported earlier names its secrets by fingerprint: those stay as stored.
      const stored = (await service.current()).config;
      const candidate = service.validate(restoreSecrets(parseYamlText(req.body, "the request body"), stored));
      const ifMatch = req.header("if-match");
      const expected = ifMatch !== undefined ? parseRevisionEtag(ifMatch) : undefined;
      if (req.query.dryRun === "true") {
        const { config, number } = await service.current();
        if (expected !== undefined && expected !== number) {
          throw new HttpError(
            412,
            "precondition_failed",
            `the config is at revision ${number}, not ${expected}`,
          );
        }
        res.json({ dryRun: true, revision: number, changes: diffConfigs(config, candidate) });
        return;
      }
      const before = (await service.current()).config;
      const result = await service.write(
        () => candidate,
        { message: "apply", author: author(req) },
        expected,
      );
      const rollout = await rolloutFor(deps, req, result);
      const fileWarnings = writeHeaders(deps, res, result, rollout);
      res.setHeader("ETag", revisionEtag(result.revision.number));
      const warnings = [
        ...configWarnings(result.revision.config).map(({ field, reason }) => ({ field, reason })),
        ...fileWarnings,
      ];
      res.json({
        revision: result.revision.number,
        changed: result.changed,
        changes: diffConfigs(before, result.revision.config),
        ...(warnings.length ? { warnings } : {}),
        ...(rollout ? { rollout } : {}),
      });
    }),
  );

  r.all("/config", methodNotAllowed("GET, PUT"));
  r.all("/status", methodNotAllowed("GET"));

  r.get(
    "/revisions",
    asyncRoute(async (req, res) => {
      const limit = intParam(req, "limit", 50, 1, 500);
      res.json({ items: await deps.store.list(limit) });
    }),
  );

  r.all("/revisions", methodNotAllowed("GET"));

  r.get(
    "/revisions/:n",
    asyncRoute(async (req, res) => {
      const n = Number(req.params.n);
      const rev = Number.isInteger(n) ? await deps.store.get(n) : undefined;
      if (!rev) throw notFound(`revision ${req.params.n}`);
      res.json({ ...rev, config: shown(rev.config) });
    }),
  );

  r.all("/revisions/:n", methodNotAllowed("GET"));

  r.post(
    "/revisions/:n/rollback",
    asyncRoute(async (req, res) => {
      const n = Number(req.params.n);
      if (!Number.isInteger(n) || n < 1)
        throw new HttpError(400, "bad_request", "a revision is a positive whole number");
      const result = await service.rollback(n, { author: author(req) });
      const rollout = await rolloutFor(deps, req, result);
      const warnings = writeHeaders(deps, res, result, rollout);
      res.json({
        revision: result.revision.number,
        changed: result.changed,
        rolledBackTo: n,
        ...(warnings.length ? { warnings } : {}),
        ...(rollout ? { rollout } : {}),
      });
    }),
  );

  r.all("/revisions/:n/rollback", methodNotAllowed("POST"));

  r.get("/fleet", (_req, res) => {
    res.json({
      ...(deps.fleet.replica ? { replica: deps.fleet.replica } : {}),
      replicas: deps.fleet.replicas(),
      nodes: deps.fleet.list(),
    });
  });

  r.get("/fleet/:node", (req, res) => {
    const node = deps.fleet.get(req.params.node!);
    if (!node) throw notFound(`node '${req.params.node}'`);
    res.json(node);
  });

  r.all("/fleet", methodNotAllowed("GET"));
  r.all("/fleet/:node", methodNotAllowed("GET"));

  r.get(
    "/:kind",
    asyncRoute(async (req, res) => {
      const kind = kindOf(req);
      const { config, number } = await service.current();
      const { limit: _limit, offset: _offset, ...filters } = req.query as Record<string, string>;
      const limit = intParam(req, "limit", 100, 1, 1000);
      const offset = intParam(req, "offset", 0, 0, 1_000_000);
      // Filters compare top-level scalar fields: ?gateway=edge&upstream=users
      const matching = (config[kind] as Resource[]).filter((item) =>
        Object.entries(filters).every(([k, v]) => item[k] !== undefined && String(item[k]) === v),
      );
      const items = matching.slice(offset, offset + limit).map((item) => shown(item, kind));
      res.setHeader("ETag", revisionEtag(number));
      res.json({
        items,
        total: matching.length,
        offset,
        limit,
        ...(offset + limit < matching.length ? { next: `?offset=${offset + limit}&limit=${limit}` } : {}),
      });
    }),
  );

  r.get(
    "/:kind/:name",
    asyncRoute(async (req, res) => {
      const kind = kindOf(req);
      const { config } = await service.current();
      const { item: stored } = find(config, kind, req.params.name!);
      if (!stored) throw notFound(`${singular(kind)} '${req.params.name}'`);
      const item = shown(stored, kind);
      res.setHeader("ETag", etagOf(item));
      res.json(item);
    }),
  );

  /** Creates or replaces one resource; `create` refuses an existing name. */
  const upsert = async (req: Request, res: Response, kind: Kind, name: string, create: boolean) => {
    requireJson(req);
    let body = req.body as Record<string, unknown>;
    if (body === null || typeof body !== "object" || Array.isArray(body)) {
      throw new HttpError(400, "bad_request", "the body must be a JSON object");
    }
    let plaintextKey: string | undefined;
    if (kind === "apiKeys" && body.sha256 === undefined) {
      // The key is made here and shown once; only its hash is stored.
      plaintextKey = `pk_${randomBytes(24).toString("base64url")}`;
      body = {
        ...body,
        sha256: createHash("sha256").update(plaintextKey).digest("hex"),
        prefix: plaintextKey.slice(0, 10),
      };
    }
    if (body.name === undefined) body = { ...body, name };
    if (body.name !== name) {
      throw new HttpError(422, "invalid_config", "the name in the body differs from the URL", [
        { field: "name", reason: `expected '${name}'` },
      ]);
    }
    // A resource read earlier names its secrets by fingerprint: those stay as stored.
    const resource = parseResource(kind, restoreSecrets(body, (await service.current()).config, kind));
    let existed = false;
    let index = -1;
    const result = await service
      .write(
        (draft) => {
          const found = find(draft, kind, name);
          if (create && found.item)
            throw new HttpError(409, "already_exists", `${singular(kind)} '${name}' already exists`);
          checkPreconditions(req, found.item && shown(found.item, kind));
          existed = !!found.item;
          const list = draft[kind] as Resource[];
          if (found.item) list[found.index] = resource;
          else list.push(resource);
          index = found.item ? found.index : list.length - 1;
        },
        { message: `${create ? "create" : "put"} ${singular(kind)} ${name}`, author: author(req) },
      )
      .catch((err) => {
        throw relativeTo(err, kind, index);
      });
    const stored = shown(find(result.revision.config, kind, name).item!, kind);
    const rollout = await rolloutFor(deps, req, result);
    const fileWarnings = writeHeaders(deps, res, result, rollout);
    res.setHeader("ETag", etagOf(stored));
    if (!existed) res.setHeader("Location", `${req.baseUrl}/${kind}/${encodeURIComponent(name)}`);
    // What the write did that its author may not expect (a route another one takes requests from).
    const warnings = configWarnings(result.revision.config)
      .filter((w) => w.about.some((a) => a.kind === kind && a.name === name))
      .map(({ field, reason }) => ({ field, reason }))
      .concat(fileWarnings);
    res.status(existed ? 200 : 201).json({
      ...stored,
      ...(plaintextKey ? { key: plaintextKey } : {}),
      ...(warnings.length ? { warnings } : {}),
      ...(rollout ? { rollout } : {}),
    });
  };

  r.post(
    "/:kind",
    express.json({ limit: "1mb" }),
    asyncRoute(async (req, res) => {
      const kind = kindOf(req);
      requireJson(req);
      const name = (req.body as { name?: unknown })?.name;
      if (typeof name !== "string" || name === "") {
        throw new HttpError(422, "invalid_config", `the ${singular(kind)} is not valid`, [
          { field: "name", reason: "required" },
        ]);
      }
      await upsert(req, res, kind, name, true);
    }),
  );

  r.put(
    "/:kind/:name",
    express.json({ limit: "1mb" }),
    asyncRoute(async (req, res) => {
      await upsert(req, res, kindOf(req), req.params.name!, false);
    }),
  );

  r.delete(
    "/:kind/:name",
    asyncRoute(async (req, res) => {
      const kind = kindOf(req);
      const name = req.params.name!;
      const result = await service.write(
        (draft) => {
          const found = find(draft, kind, name);
          if (!found.item) throw notFound(`${singular(kind)} '${name}'`);
          checkPreconditions(req, shown(found.item, kind));
          const users = referrersOf(draft, kind, name);
          if (users.length > 0) {
            throw new HttpError(
              409,
              "in_use",
              `${singular(kind)} '${name}' is still used`,
              users.map((u) => ({ field: "name", reason: `used by ${u}` })),
            );
          }
          (draft[kind] as Resource[]).splice(found.index, 1);
        },
        { message: `delete ${singular(kind)} ${name}`, author: author(req) },
      );
      const rollout = await rolloutFor(deps, req, result);
      const warnings = writeHeaders(deps, res, result, rollout);
      // Without a rollout to report the answer has no body: the warnings go in the header only.
      if (rollout)
        res.json({
          deleted: name,
          revision: result.revision.number,
          ...(warnings.length ? { warnings } : {}),
          rollout,
        });
      else res.status(204).end();
    }),
  );

  r.all("/:kind", methodNotAllowed("GET, POST"));
  r.all("/:kind/:name", methodNotAllowed("GET, PUT, DELETE"));
  return r;
}

function methodNotAllowed(allow: string) {
  return (req: Request, res: Response, next: NextFunction) => {
    res.setHeader("Allow", allow);
    next(new HttpError(405, "method_not_allowed", `${req.method} is not supported here; use ${allow}`));
  };
}

function intParam(req: Request, name: string, fallback: number, min: number, max: number): number {
  const raw = req.query[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (typeof raw !== "string" || !/^\d+$/.test(raw) || n < min || n > max) {
    throw new HttpError(400, "bad_request", `${name} must be a whole number from ${min} to ${max}`, [
      { field: name, reason: "out of range or not a number" },
    ]);
  }
  return n;
}
