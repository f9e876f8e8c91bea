export * from "./bootstrap.js";
export * from "./find-envoy.js";
