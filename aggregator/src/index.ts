export * from "./compose/call.js";
export * from "./compose/stale.js";
export * from "./config/xds-source.js";
export * from "./http/server.js";
export * from "./metrics.js";
