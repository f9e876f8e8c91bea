import { REPO_ROOT } from "@portico/envoy";
import { answerProblem, commandsOf, placeholderOf } from "./commands.js";
import { runInOneShell, substitute } from "./shell.js";
import type { Snippet } from "./snippets.js";

export interface ShellContext {
  /** The environment the commands run in: the suite's variables (the token…) included. */
  env: NodeJS.ProcessEnv;
  /** README text → what it is in this run (ports, tokens). */
  replacements: ReadonlyMap<string, string>;
  /** Commands the test's harness does in its own way (starting the stack), not run here. */
  doneByHarness?: (command: string) => boolean;
  timeoutMs?: number;
}

export interface CommandResult {
  command: string;
  /** README line of the command. */
  line: number;
  /** What is wrong with it, or undefined when it answered as stated. */
  problem?: string;
}

/**
 * Runs a shell snippet as the README shows it (with this run's ports and tokens) and checks each
 * command: exit status 0, and the answer its comment states. Placeholders must name a variable
 * the context sets.
 */
export async function checkShellSnippet(snippet: Snippet, ctx: ShellContext): Promise<CommandResult[]> {
  const results: CommandResult[] = [];
  const toRun: { command: string; text: string; line: number; expect?: string }[] = [];
  for (const c of commandsOf(snippet.text)) {
    const line = snippet.line + c.line;
    const variable = placeholderOf(c.text);
    if (variable !== undefined) {
      results.push({
        command: c.text,
        line,
        problem: ctx.env[variable]
          ? undefined
          : `a placeholder for ${variable}, which this test does not set`,
      });
    } else if (ctx.doneByHarness?.(c.text)) {
      results.push({ command: c.text, line });
    } else {
      toRun.push({ command: c.text, text: substitute(c.text, ctx.replacements), line, expect: c.expect });
    }
  }
  const { runs, stderr } = await runInOneShell(
    toRun.map((c) => c.text),
    { cwd: REPO_ROOT, env: ctx.env, timeoutMs: ctx.timeoutMs ?? 120_000 },
  );
  toRun.forEach((c, i) => {
    const run = runs[i]!;
    let problem: string | undefined;
    if (run.status !== 0) problem = `exit status ${run.status}; stderr: ${stderr.trim().slice(-600)}`;
    else if (c.expect !== undefined) {
      const why = answerProblem(substitute(c.expect, ctx.replacements), run.stdout);
      if (why) problem = `${why}: expected ${c.expect}, got ${run.stdout.slice(0, 600)}`;
    }
    results.push({ command: c.command, line: c.line, problem });
  });
  return results.sort((a, b) => a.line - b.line);
}

/** The failed ones, one line each, for an assertion message. */
export function failures(results: readonly CommandResult[]): string[] {
  return results
    .filter((r) => r.problem !== undefined)
    .map((r) => `README.md:${r.line} \`${r.command.split("\n")[0]}\`: ${r.problem}`);
}
