export * from "./envoy.js";
export * from "./http.js";
export * from "./logs.js";
export * from "./ports.js";
export * from "./upstream.js";
export * from "./wait.js";
export * from "./control-plane.js";
export * from "./admin.js";
