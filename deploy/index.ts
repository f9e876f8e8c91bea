export * from "./compose/render-bootstraps.js";
export * from "./demo/ports.js";
export * from "./demo/processes.js";
export * from "./demo/sample-upstream.js";
