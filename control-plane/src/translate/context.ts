import type { Config, Gateway } from "../model/schema.js";

/** What the per-gateway parts of the translator read: the whole (validated) config and the gateway. */
export interface GatewayContext {
  readonly config: Config;
  readonly gateway: Gateway;
}
