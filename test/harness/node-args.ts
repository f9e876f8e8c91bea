/**
 * Node arguments that run one of this repository's TypeScript entry points from source in a child
 * process: the `source` export condition, so `@portico/*` imports resolve to each package's
 * src/index.ts rather than an unbuilt dist/, and tsx by absolute URL, so the child's working
 * directory may be anywhere.
 */
export const RUN_FROM_SOURCE: readonly string[] = [
  "--conditions=source",
  "--import",
  import.meta.resolve("tsx"),
];
