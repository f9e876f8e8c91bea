import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface CommandRun {
  stdout: string;
  status: number;
}

/** Starts and ends each command's output; a control character no command prints. */
const MARK = "\u001eREADME";

/**
 * Runs the commands in order in one bash, as a reader pasting them into one terminal would (a
 * variable or function one defines is there for the next), and returns each one's output and exit
 * status. stderr is returned whole, for messages.
 */
export async function runInOneShell(
  commands: readonly string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ runs: CommandRun[]; stderr: string }> {
  const script = commands
    .map((c, i) => `printf '\\n${MARK} start ${i}\\n'\n${c}\nprintf '\\n${MARK} end ${i} %d\\n' $?`)
    .join("\n");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-readme-"));
  const file = path.join(dir, "snippet.sh");
  fs.writeFileSync(file, script);
  try {
    const child = spawn("bash", ["--noprofile", "--norc", file], {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
    await new Promise((resolve) => child.on("close", resolve));
    clearTimeout(timer);
    const runs: CommandRun[] = commands.map((_, i) => {
      const m = new RegExp(`${MARK} start ${i}\\n([\\s\\S]*?)\\n${MARK} end ${i} (\\d+)\\n`).exec(stdout);
      return m ? { stdout: m[1]!.trim(), status: Number(m[2]) } : { stdout: "(did not run)", status: -1 };
    });
    return { runs, stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Each `from` in `text` replaced by its `to`: the README's ports and tokens, for the ones a test uses. */
export function substitute(text: string, replacements: ReadonlyMap<string, string>): string {
  let out = text;
  for (const [from, to] of replacements) out = out.split(from).join(to);
  return out;
}
