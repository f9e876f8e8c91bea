import { z } from "zod";
import { ConfigSchema, KIND_NAMES, KINDS } from "../model/schema.js";
import { SECRET_PATHS } from "../model/secrets.js";
import { singular } from "../model/validate.js";

function schemaOf(s: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(s, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return rest;
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: ref("Error") } },
});
const errors = {
  "400": errorResponse("Malformed request"),
  "401": errorResponse("No or invalid token"),
  "403": errorResponse("Read-only token used for a write"),
  "405": errorResponse("Method not allowed on this path"),
};
const writeErrors = {
  ...errors,
  "409": errorResponse("Conflict: exists, or still used by other resources"),
  "412": errorResponse("If-Match does not match the current ETag"),
  "413": errorResponse("Body too large"),
  "415": errorResponse("Unsupported content type"),
  "422": errorResponse("Invalid resource: each problem with its field and reason"),
};
const waitParams = [
  { name: "wait", in: "query", required: false, schema: { type: "string", enum: ["applied"] } },
  { name: "timeout", in: "query", required: false, schema: { type: "string", pattern: "^[0-9]+(ms|s)?$" } },
];
const nameParam = { name: "name", in: "path", required: true, schema: { type: "string" } };

/** What a write's answer may add: the routes the written config leaves some requests of to another. */
const WARNINGS =
  "; with `warnings` ([{field, reason}]) when a route is left only some of its requests by another " +
  "route (on a listener or host, or for requests both match where only the order of creation decides). " +
  "A route left no request at all is refused with 422 naming both routes.";

/**
 * Marks each secret field of a JSON schema: written as a string, read back as a `RedactedSecret`
 * (its fingerprint), and a redacted stand-in written back keeps the stored secret.
 */
function markSecrets(schema: unknown, path: readonly string[]): void {
  let node = schema as Record<string, any> | undefined;
  for (const step of path.slice(0, -1)) {
    node = step === "*" ? node?.items : node?.properties?.[step];
  }
  const last = path[path.length - 1]!;
  const parent = last === "*" ? node : node?.properties;
  const key = last === "*" ? "items" : last;
  const field = parent?.[key];
  if (!parent || !field) throw new Error(`openapi: no secret field at ${path.join(".")}`);
  parent[key] = {
    anyOf: [
      { ...field, writeOnly: true, description: "The secret, on write only: never returned by a read." },
      ref("RedactedSecret"),
    ],
  };
}

const RedactedSecretSchema = {
  type: "object",
  description:
    "What every read (GET, export, revisions, the CLI) shows in place of a secret. Writing it back " +
    "unchanged keeps the stored secret; the store holds secrets sealed (AES-256-GCM).",
  required: ["redacted", "sha256"],
  properties: {
    redacted: { const: true },
    sha256: {
      type: "string",
      pattern: "^sha256:[0-9a-f]{16}$",
      description: "First 16 hex digits of the secret's SHA-256",
    },
    createdAt: { type: "string", format: "date-time", description: "When the store first held this secret" },
  },
  additionalProperties: false,
};

const TypeStatusSchema = {
  type: "object",
  required: ["typeUrl"],
  properties: {
    typeUrl: { type: "string" },
    sentVersion: { type: "string" },
    sentAt: { type: "string", format: "date-time" },
    ackedVersion: { type: "string" },
    ackedAt: { type: "string", format: "date-time" },
    lastNack: {
      type: "object",
      description: "The last response this node refused, with Envoy's reason",
      properties: {
        version: { type: "string" },
        nonce: { type: "string" },
        message: { type: "string" },
        code: { type: "integer" },
        at: { type: "string", format: "date-time" },
      },
    },
  },
};

const NodeStatusSchema = {
  type: "object",
  description:
    "One xDS client (an Envoy or a policy service) as the replica it is connected to reports it; " +
    "only streams whose client passed the identity check are listed.",
  required: ["id", "group", "protocol", "connectedSince", "streams", "types"],
  properties: {
    id: { type: "string", description: "node.id" },
    group: { type: "string", description: "node.cluster: the gateway group, or portico:policy" },
    version: { type: "string", description: "The client's build version, as it reports it" },
    userAgent: { type: "string" },
    protocol: { type: "string", enum: ["sotw", "delta"] },
    replica: { type: "string", description: "The control-plane replica the node is connected to" },
    connectedSince: { type: "string", format: "date-time" },
    streams: { type: "integer" },
    appliedRevision: { type: "string", description: "The snapshot version the node has accepted in full" },
    appliedConfigRevision: { type: "string", description: "The store revision that snapshot was made from" },
    types: { type: "object", additionalProperties: TypeStatusSchema },
  },
};

/** The OpenAPI 3.1 document, generated from the same zod schemas that validate requests. */
export function openApiDocument(): Record<string, unknown> {
  const schemas: Record<string, unknown> = {
    Error: {
      type: "object",
      required: ["code", "message", "details"],
      properties: {
        code: { type: "string" },
        message: { type: "string" },
        details: {
          type: "array",
          items: { type: "object", properties: { field: { type: "string" }, reason: { type: "string" } } },
        },
      },
    },
    Config: schemaOf(ConfigSchema),
    RedactedSecret: RedactedSecretSchema,
    NodeStatus: NodeStatusSchema,
  };
  for (const path of SECRET_PATHS)
    markSecrets((schemas.Config as any).properties[path[0]!].items, path.slice(2));
  const paths: Record<string, unknown> = {};
  for (const kind of KIND_NAMES) {
    const schemaName =
      kind[0]!.toUpperCase() +
      kind.slice(1, kind.endsWith("ies") ? -3 : -1) +
      (kind.endsWith("ies") ? "y" : "");
    schemas[schemaName] = schemaOf(KINDS[kind]);
    for (const path of SECRET_PATHS) if (path[0] === kind) markSecrets(schemas[schemaName], path.slice(2));
    const one = singular(kind);
    paths[`/api/v1/${kind}`] = {
      get: {
        summary: `List ${kind}`,
        parameters: [
          { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } },
          { name: "offset", in: "query", schema: { type: "integer", minimum: 0 } },
        ],
        responses: {
          "200": {
            description: "A page of resources",
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  properties: {
                    items: { type: "array", items: ref(schemaName) },
                    total: { type: "integer" },
                  },
                },
              },
            },
          },
          ...errors,
        },
      },
      post: {
        summary: `Create a ${one}`,
        parameters: waitParams,
        requestBody: { required: true, content: { "application/json": { schema: ref(schemaName) } } },
        responses: { "201": { description: `Created: the ${one}${WARNINGS}` }, ...writeErrors },
      },
    };
    paths[`/api/v1/${kind}/{name}`] = {
      get: {
        summary: `Get a ${one}`,
        parameters: [nameParam],
        responses: {
          "200": {
            description: "The resource (ETag header set)",
            content: { "application/json": { schema: ref(schemaName) } },
          },
          "404": errorResponse("No such resource"),
          ...errors,
        },
      },
      put: {
        summary: `Create or replace a ${one}`,
        parameters: [
          nameParam,
          ...waitParams,
          { name: "If-Match", in: "header", required: false, schema: { type: "string" } },
        ],
        requestBody: { required: true, content: { "application/json": { schema: ref(schemaName) } } },
        responses: {
          "200": { description: `Replaced: the ${one}${WARNINGS}` },
          "201": { description: `Created: the ${one}${WARNINGS}` },
          ...writeErrors,
        },
      },
      delete: {
        summary: `Delete a ${one}`,
        parameters: [
          nameParam,
          ...waitParams,
          { name: "If-Match", in: "header", required: false, schema: { type: "string" } },
        ],
        responses: {
          "204": { description: "Deleted" },
          "404": errorResponse("No such resource"),
          ...writeErrors,
        },
      },
    };
  }
  paths["/api/v1/config"] = {
    get: {
      summary: "Export the whole config as YAML (or JSON)",
      responses: { "200": { description: "The config" }, ...errors },
    },
    put: {
      summary: "Apply a whole config (declarative); ?dryRun=true returns the diff only",
      parameters: [
        ...waitParams,
        { name: "dryRun", in: "query", schema: { type: "string", enum: ["true", "false"] } },
      ],
      requestBody: {
        required: true,
        content: {
          "application/yaml": { schema: ref("Config") },
          "application/json": { schema: ref("Config") },
        },
      },
      responses: { "200": { description: `Applied, or the diff${WARNINGS}` }, ...writeErrors },
    },
  };
  paths["/api/v1/revisions"] = {
    get: {
      summary: "Revision history, newest first",
      responses: { "200": { description: "Revisions" }, ...errors },
    },
  };
  paths["/api/v1/revisions/{n}"] = {
    get: {
      summary: "One revision",
      parameters: [{ name: "n", in: "path", required: true, schema: { type: "integer", minimum: 1 } }],
      responses: {
        "200": { description: "The revision" },
        "404": errorResponse("Not in the history"),
        ...errors,
      },
    },
  };
  paths["/api/v1/revisions/{n}/rollback"] = {
    post: {
      summary: "Commit an earlier revision's config again",
      parameters: [
        { name: "n", in: "path", required: true, schema: { type: "integer", minimum: 1 } },
        ...waitParams,
      ],
      responses: {
        "200": { description: "Rolled back" },
        "404": errorResponse("Not in the history"),
        ...writeErrors,
      },
    },
  };
  paths["/api/v1/status"] = {
    get: {
      summary: "Connected nodes: what each applied, and the last config each refused",
      responses: { "200": { description: "Fleet status" }, ...errors },
    },
  };
  paths["/api/v1/fleet"] = {
    get: {
      summary: "Every connected node across all control-plane replicas sharing the store",
      responses: {
        "200": {
          description: "The fleet",
          content: {
            "application/json": {
              schema: {
                type: "object",
                required: ["replicas", "nodes"],
                properties: {
                  replica: { type: "string", description: "The replica that answered" },
                  replicas: {
                    type: "array",
                    items: {
                      type: "object",
                      properties: { replica: { type: "string" }, nodes: { type: "integer" } },
                    },
                  },
                  nodes: { type: "array", items: ref("NodeStatus") },
                },
              },
            },
          },
        },
        ...errors,
      },
    },
  };
  paths["/api/v1/fleet/{node}"] = {
    get: {
      summary: "One node, whichever replica it is connected to",
      parameters: [{ name: "node", in: "path", required: true, schema: { type: "string" } }],
      responses: {
        "200": { description: "The node", content: { "application/json": { schema: ref("NodeStatus") } } },
        "404": errorResponse("No such node connected"),
        ...errors,
      },
    },
  };
  return {
    openapi: "3.1.0",
    info: { title: "Portico admin API", version: "1.0.0" },
    components: { schemas, securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
    security: [{ bearer: [] }],
    paths,
  };
}
