/**
 * The path template of a `google.api.http` binding (`/v1/{name=shelves/*}/books:publish`): Envoy
 * refuses the whole listener when one does not parse, so it is checked before anything is stored.
 *
 *   Template = "/" Segments [ ":" Verb ] ;  Segment = "*" | "**" | LITERAL | Variable ;
 *   Variable = "{" FieldPath [ "=" Segments ] "}" ;  FieldPath = IDENT { "." IDENT } ;
 */

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LITERAL = /^[A-Za-z0-9._~!$&'()+,;=@%-]+$/;

export type ParsedTemplate = { ok: true; variables: string[] } | { ok: false; reason: string };

function checkSegments(text: string, inVariable: boolean): string | undefined {
  const segments = text.split("/");
  for (const [i, s] of segments.entries()) {
    if (s === "") return "has an empty segment";
    if (s === "**" && i !== segments.length - 1) return "'**' must be the last segment";
    if (s !== "*" && s !== "**" && !LITERAL.test(s))
      return `segment '${s}' has characters a path cannot carry`;
    if (inVariable && /[{}]/.test(s)) return "variables cannot nest";
  }
  return undefined;
}

export function parseTemplate(path: string): ParsedTemplate {
  if (!path.startsWith("/")) return { ok: false, reason: "must start with '/'" };
  const variables: string[] = [];
  let rest = path.slice(1);
  // The verb follows the last ':' outside a variable.
  const close = rest.lastIndexOf("}");
  const colon = rest.lastIndexOf(":");
  if (colon > close && colon > rest.lastIndexOf("/")) {
    const verb = rest.slice(colon + 1);
    if (!LITERAL.test(verb)) return { ok: false, reason: `verb '${verb}' is not a literal` };
    rest = rest.slice(0, colon);
  }
  let literal = "";
  for (let i = 0; i < rest.length; i++) {
    const c = rest[i]!;
    if (c === "}") return { ok: false, reason: "has a '}' without '{'" };
    if (c !== "{") {
      literal += c;
      continue;
    }
    const end = rest.indexOf("}", i);
    if (end < 0) return { ok: false, reason: "has a '{' without '}'" };
    const body = rest.slice(i + 1, end);
    if (body.includes("{")) return { ok: false, reason: "variables cannot nest" };
    const [field, pattern] = body.split("=", 2) as [string, string | undefined];
    if (!field.split(".").every((p) => IDENT.test(p))) {
      return { ok: false, reason: `variable '{${body}}' does not name a field` };
    }
    if (pattern !== undefined) {
      const problem = checkSegments(pattern, true);
      if (problem) return { ok: false, reason: `variable '{${body}}' ${problem}` };
    }
    variables.push(field);
    // A variable is one segment of the template.
    literal += "*";
    i = end;
  }
  const problem = checkSegments(literal, false);
  return problem ? { ok: false, reason: problem } : { ok: true, variables };
}
