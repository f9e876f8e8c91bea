import fs from "node:fs";
import { parseDocument } from "yaml";
import { compileRoutes, zodProblems, type Compiled } from "./compile.js";
import { FileSpecSchema } from "@portico/contract";

/**
 * The static config, for running without a control plane: the same routes the control plane
 * would send, in YAML, with a `partsUrl` they share.
 *
 * ```yaml
 * partsUrl: http://127.0.0.1:10001
 * routes:
 *   - name: home
 *     match: { path: /users/{id}/home }
 *     timeoutMs: 1000
 *     parts:
 *       - { key: profile, upstream: users, path: "/users/{id}", timeoutMs: 400, required: true }
 * ```
 */
export function parseConfigText(text: string): Compiled {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    return {
      ok: false,
      problems: doc.errors.map((e) => ({
        field: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "(document)",
        reason: e.message.split("\n")[0]!,
      })),
    };
  }
  const parsed = FileSpecSchema.safeParse(doc.toJS() ?? {});
  if (!parsed.success) return { ok: false, problems: zodProblems("", parsed.error) };
  const { partsUrl, routes } = parsed.data;
  return compileRoutes(
    routes.map((r, i) => ({
      at: `routes[${i}]`,
      value: partsUrl !== undefined && r.partsUrl === undefined ? { ...r, partsUrl } : r,
    })),
  );
}

export function loadConfigFile(file: string): Compiled {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    return { ok: false, problems: [{ field: file, reason: (err as Error).message }] };
  }
  return parseConfigText(text);
}
