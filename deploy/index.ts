export * from "./compose/render-bootstraps.js";
export * from "./demo/sample-upstream.js";
