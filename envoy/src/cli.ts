import { findEnvoy } from "./find-envoy.js";

const USAGE = "usage: tsx envoy/src/cli.ts [--path-only]\n";
const args = process.argv.slice(2);

if (args.includes("--help") || args.includes("-h")) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const unknown = args.filter((a) => a !== "--path-only");
if (unknown.length > 0) {
  process.stderr.write(`unknown argument ${unknown.join(" ")}\n${USAGE}`);
  process.exit(2);
}
const pathOnly = args.includes("--path-only");

try {
  // Install progress goes to stderr so `--path-only` output stays usable in $(...).
  const found = await findEnvoy({ log: (msg) => process.stderr.write(`${msg}\n`) });
  process.stdout.write(
    pathOnly ? `${found.path}\n` : `envoy ${found.version} at ${found.path} (${found.source})\n`,
  );
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exit(1);
}
