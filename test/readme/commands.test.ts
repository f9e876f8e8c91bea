import { describe, expect, it } from "vitest";
import { answerProblem, commandsOf, placeholderOf, splitComment, statedAnswer } from "./commands.js";
import { parseMarker, snippets } from "./snippets.js";

describe("reading README snippets", () => {
  it("finds fences and the marker before each", () => {
    const md = [
      "## One",
      "<!-- readme-test: demo -->",
      "",
      "```sh",
      "# not a heading",
      "curl x",
      "```",
      "text",
      "```yaml",
      "a: 1",
      "```",
    ].join("\n");
    expect(snippets(md)).toEqual([
      { marker: { kind: "demo" }, lang: "sh", text: "# not a heading\ncurl x", line: 4, section: "One" },
      { marker: undefined, lang: "yaml", text: "a: 1", line: 9, section: "One" },
    ]);
    expect(parseMarker("skip: needs a cluster")).toEqual({ kind: "skip", reason: "needs a cluster" });
    expect(() => parseMarker("run")).toThrow(/unknown readme-test marker/);
  });

  it("splits a comment off outside quotes only", () => {
    expect(splitComment(`curl -w '%{http_code} #' x  # 200: ok`)).toEqual({
      code: `curl -w '%{http_code} #' x`,
      comment: "200: ok",
    });
    expect(splitComment(`echo "a # b" c#d`)).toEqual({ code: `echo "a # b" c#d` });
    expect(splitComment("  # alone")).toEqual({ code: "", comment: "alone" });
  });

  it("takes the answer before the first ': ', or a whole comment that starts like one", () => {
    expect(statedAnswer('{"a":1,…}: prose')).toBe('{"a":1,…}');
    expect(statedAnswer("200 200 429")).toBe("200 200 429");
    expect(statedAnswer("401 with WWW-Authenticate: /x needs a key")).toBe("401 with WWW-Authenticate");
    expect(statedAnswer("the control plane's metrics")).toBeUndefined();
  });

  it("joins continuation lines, and gives a command the comment on the next line", () => {
    const text = [
      "curl -X PUT \\",
      "  -d '{}'",
      "      # 204: nothing",
      "curl a   # prose only",
      "# a comment of the snippet's own",
      "",
      "export T=<the token>",
    ].join("\n");
    expect(commandsOf(text)).toEqual([
      { text: "curl -X PUT \\\n  -d '{}'", line: 1, expect: "204" },
      { text: "curl a", line: 4 },
      { text: "export T=<the token>", line: 7 },
    ]);
    expect(placeholderOf("export T=<the token>")).toBe("T");
    expect(placeholderOf("export T=abc")).toBeUndefined();
  });

  it("compares output with `…` for anything, and status and headers of `curl -i`", () => {
    expect(answerProblem('{"s":"a",…,"c":null,…}', '{"s":"a","x":1,"c":null,"p":2}')).toBeUndefined();
    expect(answerProblem('{"s":"a",…}', '{"s":"b"}')).toBe("the output differs");
    expect(answerProblem("200 200 429", "200 200  429 ")).toBeUndefined();
    const head = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: ApiKey\r\n\r\n{}";
    expect(answerProblem("401 with WWW-Authenticate", head)).toBeUndefined();
    expect(answerProblem("403 with WWW-Authenticate", head)).toMatch(/status 401/);
    expect(answerProblem("401 with Retry-After", head)).toMatch(/no Retry-After/);
  });
});
