/**
 * The README's fenced snippets and how each is tested, as its marker says: an HTML comment on the
 * line before the fence, invisible on the rendered page.
 *
 *   <!-- readme-test: demo -->         shell, run against `npm run demo` (test/readme)
 *   <!-- readme-test: compose -->      shell, run against deploy/docker-compose.yml (test/e2e)
 *   <!-- readme-test: config -->       YAML, a whole config: validated as the admin API would
 *   <!-- readme-test: config-part -->  YAML, part of a config: every field's name and type
 *   <!-- readme-test: skip: <why> -->  not run, and why
 *
 * Every fence needs one, so a new snippet is tested or says why not.
 */
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "@portico/envoy";

export type Marker =
  { kind: "demo" | "compose" | "config" | "config-part" } | { kind: "skip"; reason: string };

export interface Snippet {
  /** undefined: the fence has no marker. */
  marker?: Marker;
  lang: string;
  text: string;
  /** 1-based line of the opening fence, for messages. */
  line: number;
  /** The heading the snippet is under. */
  section: string;
}

const MARKER = /^<!--\s*readme-test:\s*(.*?)\s*-->$/;
const RUN_KINDS = ["demo", "compose", "config", "config-part"] as const;

/** The marker's meaning, or an error naming what it should be. */
export function parseMarker(text: string): Marker {
  if (text.startsWith("skip:")) {
    const reason = text.slice("skip:".length).trim();
    if (reason) return { kind: "skip", reason };
  }
  const kind = RUN_KINDS.find((k) => k === text);
  if (kind) return { kind };
  throw new Error(`unknown readme-test marker '${text}': ${RUN_KINDS.join(", ")} or 'skip: <why>'`);
}

/** Every fenced block of a Markdown text, with the marker on the line before it (blank lines between allowed). */
export function snippets(markdown: string): Snippet[] {
  const lines = markdown.split("\n");
  const out: Snippet[] = [];
  let section = "";
  let marker: Marker | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const heading = /^#{1,6}\s+(.*)$/.exec(line);
    if (heading) section = heading[1]!;
    const m = MARKER.exec(line.trim());
    if (m) {
      marker = parseMarker(m[1]!);
      continue;
    }
    const fence = /^(\s*)(```+)(\S*)\s*$/.exec(line);
    if (!fence) {
      if (line.trim() !== "") marker = undefined;
      continue;
    }
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !lines[j]!.trim().startsWith(fence[2]!)) body.push(lines[j++]!);
    out.push({ marker, lang: fence[3]!, text: body.join("\n"), line: i + 1, section });
    marker = undefined;
    i = j;
  }
  return out;
}

export const README = path.join(REPO_ROOT, "README.md");

/** The README's snippets of one kind. */
export function readmeSnippets(kind: Marker["kind"]): Snippet[] {
  return snippets(fs.readFileSync(README, "utf8")).filter((s) => s.marker?.kind === kind);
}
