/** What the decision reads from a request: the parts of Envoy's `CheckRequest` that matter here. */
export interface RequestAttributes {
  /** Header names in lower case. Envoy joins repeated headers with a comma. */
  readonly headers: ReadonlyMap<string, string>;
  /** The request path with its query string, as in `:path`. */
  readonly path: string;
  readonly method: string;
  /** The downstream peer's address as Envoy saw it; undefined when Envoy did not say. */
  readonly sourceIp: string | undefined;
  /** Per-route settings (ext_authz `context_extensions`); see `route.ts` for the keys. */
  readonly contextExtensions: Readonly<Record<string, string>>;
}

/** All values of a query parameter, decoded. */
export function queryValues(path: string, name: string): string[] {
  const q = path.indexOf("?");
  if (q < 0) return [];
  const end = path.indexOf("#", q);
  return new URLSearchParams(path.slice(q + 1, end < 0 ? undefined : end)).getAll(name);
}

/** Cookies of a `cookie` header as name/value pairs, in order (RFC 6265 §5.4 serialisation). */
export function parseCookies(header: string | undefined): Array<[string, string]> {
  if (!header) return [];
  const out: Array<[string, string]> = [];
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    let value = part.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    if (name) out.push([name, value]);
  }
  return out;
}
