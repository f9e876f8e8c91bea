/**
 * The two small languages of a composite route: the path a client calls (`/users/{id}/home`:
 * literal segments and whole-segment `{param}`s) and the path each part calls
 * (`/orders?user={id}&by={header.x-portico-consumer}`: text with `{param}` and `{header.<name>}`
 * anywhere). The control plane validates with these same parsers, so what it accepts is what the
 * aggregator can run.
 */

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

type Segment = { literal: string } | { param: string };

export interface PathPattern {
  readonly text: string;
  readonly segments: readonly Segment[];
  /** Parameter names, in order. */
  readonly params: readonly string[];
}

const PARAM = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** RFC 3986 `pchar`s: what may stand in a path segment unescaped. */
const LITERAL = /^[A-Za-z0-9._~!$&'()*+,;=:@%-]+$/;
const HEADER = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export function parsePathPattern(text: string): Parsed<PathPattern> {
  if (!text.startsWith("/")) return { ok: false, reason: "must start with '/'" };
  if (text === "/") return { ok: true, value: { text, segments: [], params: [] } };
  const segments: Segment[] = [];
  const params: string[] = [];
  for (const raw of text.slice(1).split("/")) {
    if (raw === "") return { ok: false, reason: "empty path segment (a doubled or trailing '/')" };
    if (raw.startsWith("{") && raw.endsWith("}")) {
      const name = raw.slice(1, -1);
      if (!PARAM.test(name))
        return { ok: false, reason: `'{${name}}': a parameter name is letters, digits and '_'` };
      if (params.includes(name)) return { ok: false, reason: `parameter '{${name}}' appears twice` };
      params.push(name);
      segments.push({ param: name });
    } else if (!LITERAL.test(raw)) {
      return {
        ok: false,
        reason: `segment '${raw}': a parameter is a whole segment such as '{id}'; other characters must be URL-safe`,
      };
    } else {
      segments.push({ literal: raw });
    }
  }
  return { ok: true, value: { text, segments, params } };
}

/** The parameters of a request path (without its query), decoded; undefined when it does not match. */
export function matchPath(pattern: PathPattern, path: string): Record<string, string> | undefined {
  if (pattern.segments.length === 0) return path === "/" ? {} : undefined;
  const parts = path.split("/").slice(1);
  if (!path.startsWith("/") || parts.length !== pattern.segments.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const seg = pattern.segments[i]!;
    const got = parts[i]!;
    if ("literal" in seg) {
      if (seg.literal !== got) return undefined;
    } else {
      if (got === "") return undefined;
      try {
        params[seg.param] = decodeURIComponent(got);
      } catch {
        return undefined; // a malformed escape matches nothing
      }
    }
  }
  return params;
}

const RE2_SPECIAL = /[\\^$.|?*+()[\]{}]/g;

/** The RE2 regex Envoy matches the path with: each parameter is one non-empty segment. */
export function pathPatternRegex(pattern: PathPattern): string {
  if (pattern.segments.length === 0) return "^/$";
  const body = pattern.segments
    .map((s) => ("literal" in s ? s.literal.replace(RE2_SPECIAL, "\\$&") : "[^/]+"))
    .join("/");
  return `^/${body}$`;
}

type Piece = { text: string } | { param: string } | { header: string };

export interface PartTemplate {
  readonly text: string;
  readonly pieces: readonly Piece[];
  readonly params: readonly string[];
  /** Lower-cased header names. */
  readonly headers: readonly string[];
}

export function parsePartTemplate(text: string): Parsed<PartTemplate> {
  if (!text.startsWith("/")) return { ok: false, reason: "must start with '/'" };
  if (/[\s#]/.test(text)) return { ok: false, reason: "must not contain spaces or '#'" };
  const pieces: Piece[] = [];
  const params: string[] = [];
  const headers: string[] = [];
  let rest = text;
  while (rest.length > 0) {
    const open = rest.indexOf("{");
    const close = rest.indexOf("}");
    if (open === -1) {
      if (close !== -1) return { ok: false, reason: "a '}' without its '{'" };
      pieces.push({ text: rest });
      break;
    }
    if (close !== -1 && close < open) return { ok: false, reason: "a '}' without its '{'" };
    if (close === -1) return { ok: false, reason: "a '{' without its '}'" };
    if (open > 0) pieces.push({ text: rest.slice(0, open) });
    const name = rest.slice(open + 1, close);
    if (name.startsWith("header.")) {
      const header = name.slice("header.".length).toLowerCase();
      if (!HEADER.test(header)) return { ok: false, reason: `'{${name}}': not a valid header name` };
      pieces.push({ header });
      if (!headers.includes(header)) headers.push(header);
    } else if (PARAM.test(name)) {
      pieces.push({ param: name });
      if (!params.includes(name)) params.push(name);
    } else {
      return { ok: false, reason: `'{${name}}': use {<parameter>} or {header.<name>}` };
    }
    rest = rest.slice(close + 1);
  }
  return { ok: true, value: { text, pieces, params, headers } };
}

export type Rendered = { ok: true; path: string } | { ok: false; missingHeader: string };

/**
 * The path a part calls. Values are percent-encoded, so a parameter or header can never add a
 * segment, a query parameter or a fragment. A header the request does not carry makes no path:
 * calling with an empty value would ask the upstream something else.
 */
export function renderPartTemplate(
  t: PartTemplate,
  params: Readonly<Record<string, string>>,
  header: (name: string) => string | undefined,
): Rendered {
  let out = "";
  for (const p of t.pieces) {
    if ("text" in p) out += p.text;
    else if ("param" in p) out += encodeURIComponent(params[p.param] ?? "");
    else {
      const v = header(p.header);
      if (v === undefined || v === "") return { ok: false, missingHeader: p.header };
      out += encodeURIComponent(v);
    }
  }
  return { ok: true, path: out };
}
