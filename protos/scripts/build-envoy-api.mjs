// Builds `protos/generated/envoy-api.binpb`: Envoy's data-plane API (and the xds, udpa, validate
// and googleapis files it imports) as one FileDescriptorSet, from the PyPI package `xds-protos`,
// which publishes that API compiled. Run at install time (`npm run build` runs it); does nothing
// when the file for the pinned release is already there. Needs python3 with pip, nothing else.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
/** The xds-protos release Portico speaks (see the file for why that one). */
const XDS_PROTOS_VERSION = JSON.parse(fs.readFileSync(path.join(here, "envoy-api-pin.json"), "utf8")).version;
const out = path.join(here, "..", "generated", "envoy-api.binpb");
const stamp = `${out}.version`;

if (
  fs.existsSync(out) &&
  fs.existsSync(stamp) &&
  fs.readFileSync(stamp, "utf8").trim() === XDS_PROTOS_VERSION
) {
  process.exit(0);
}

/** A python3 with pip: the project's venv (where the Envoy wheel goes), else the machine's. */
function python() {
  const candidates = [path.join(here, "..", "..", ".venv", "bin", "python3"), "python3"];
  for (const bin of candidates) {
    try {
      execFileSync(bin, ["-m", "pip", "--version"], { stdio: "ignore" });
      return bin;
    } catch {
      // try the next one
    }
  }
  console.error(
    "building Envoy's API descriptors needs python3 with pip (Debian: apt-get install -y python3-pip python3-venv)",
  );
  process.exit(1);
}

const py = python();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "portico-xds-protos-"));
try {
  console.log(`fetching xds-protos ${XDS_PROTOS_VERSION} (Envoy's API) from PyPI…`);
  execFileSync(
    py,
    [
      "-m",
      "pip",
      "download",
      "--quiet",
      "--no-deps",
      "--only-binary=:all:",
      "--dest",
      tmp,
      `xds-protos==${XDS_PROTOS_VERSION}`,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
  const wheel = fs.readdirSync(tmp).find((f) => f.endsWith(".whl"));
  if (!wheel) throw new Error(`pip downloaded no wheel of xds-protos ${XDS_PROTOS_VERSION}`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  execFileSync(py, [path.join(here, "descriptor-set.py"), path.join(tmp, wheel), `${out}.tmp`], {
    stdio: ["ignore", "inherit", "inherit"],
  });
  fs.renameSync(`${out}.tmp`, out);
  fs.writeFileSync(stamp, `${XDS_PROTOS_VERSION}\n`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
