/**
 * A README shell snippet as commands, each with the answer its comment states.
 *
 * A command is a line, with the lines a trailing `\` joins to it. Its comment states an answer in
 * the text before the first ": " (what follows is for the reader), or as the whole comment when
 * that starts like an answer (`{`, `[` or a status code). A comment alone on the next line is the
 * comment of a command that has none. Comments without a stated answer leave only the exit status
 * to check. An answer is either
 *
 *   - `401 with WWW-Authenticate` (`curl -i` output: the status and the headers named), or
 *   - the output itself, where `…` stands for anything and runs of white space are one space.
 *
 * `export NAME=<…>` is a placeholder for a value the reader copies from elsewhere (the token the
 * demo printed): the suite sets NAME itself.
 */

export interface Command {
  /** The shell text, continuation lines included. */
  text: string;
  /** The stated answer, if the comment states one. */
  expect?: string;
  /** 1-based line within the snippet. */
  line: number;
}

/** A line split at its comment: a `#` that starts a word outside quotes. */
export function splitComment(line: string): { code: string; comment?: string } {
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote === "'") {
      if (c === "'") quote = undefined;
    } else if (quote === '"') {
      if (c === "\\") i++;
      else if (c === '"') quote = undefined;
    } else if (c === "\\") i++;
    else if (c === "'" || c === '"') quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!)))
      return { code: line.slice(0, i).trimEnd(), comment: line.slice(i + 1).trim() };
  }
  return { code: line.trimEnd() };
}

/** The answer a comment states, if it states one. */
export function statedAnswer(comment: string): string | undefined {
  const colon = comment.indexOf(": ");
  if (colon >= 0) return comment.slice(0, colon).trim();
  return /^(\{|\[|\d{3}\b)/.test(comment) ? comment.trim() : undefined;
}

export function commandsOf(snippet: string): Command[] {
  const out: (Command & { comment?: string })[] = [];
  let open: { lines: string[]; comment?: string; line: number } | undefined;
  let last: (Command & { comment?: string }) | undefined;
  const close = () => {
    if (!open) return;
    last = { text: open.lines.join("\n"), line: open.line, comment: open.comment };
    out.push(last);
    open = undefined;
  };
  snippet.split("\n").forEach((raw, i) => {
    const { code, comment } = splitComment(raw);
    if (code === "") {
      // A comment alone on the line after a command without one is that command's comment.
      if (comment !== undefined && !open && last && last.comment === undefined && out.at(-1) === last)
        last.comment = comment;
      else last = undefined;
      return;
    }
    open ??= { lines: [], line: i + 1 };
    open.lines.push(code);
    if (comment !== undefined) open.comment = comment;
    if (!code.endsWith("\\")) close();
  });
  close();
  return out.map(({ text, line, comment }) => {
    const expect = comment === undefined ? undefined : statedAnswer(comment);
    return expect === undefined ? { text, line } : { text, line, expect };
  });
}

/** A placeholder line, `export NAME=<what to copy>`: the variable it stands for. */
export function placeholderOf(command: string): string | undefined {
  return /^export\s+(\w+)=<[^>]*>$/.exec(command.trim())?.[1];
}

const collapse = (s: string) => s.replace(/\s+/g, " ").trim();

/** Whether `output` is the stated answer; a reason when it is not. */
export function answerProblem(expect: string, output: string): string | undefined {
  const withHeaders = /^(\d{3}) with ([\w-]+(?:(?:, | and )[\w-]+)*)$/.exec(expect);
  if (withHeaders) {
    const [head = "", ...rest] = output.split(/\r?\n/);
    const status = /^HTTP\/[\d.]+ (\d{3})/.exec(head)?.[1];
    if (status !== withHeaders[1]) return `status ${status ?? "(none)"} instead of ${withHeaders[1]}`;
    const names = new Set(
      rest.map((l) => /^([\w-]+):/.exec(l)?.[1]?.toLowerCase()).filter((n): n is string => !!n),
    );
    const missing = withHeaders[2]!.split(/, | and /).filter((h) => !names.has(h.toLowerCase()));
    return missing.length > 0 ? `no ${missing.join(", ")} header` : undefined;
  }
  const pattern = collapse(expect)
    .split("…")
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
    .join(".*");
  return new RegExp(`^${pattern}$`, "s").test(collapse(output)) ? undefined : "the output differs";
}
