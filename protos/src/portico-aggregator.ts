import { TYPE_PREFIX } from "./envoy.js";

/**
 * `portico.aggregator.v1` (protos/portico/aggregator/v1/aggregator.proto): the composite routes
 * the aggregator receives over xDS, one resource per route.
 */
export const COMPOSITE_ROUTE_TYPE = "portico.aggregator.v1.CompositeRoute";
export const COMPOSITE_ROUTE_TYPE_URL = TYPE_PREFIX + COMPOSITE_ROUTE_TYPE;

/*
 * The messages as plain objects, with the field names of the .proto (how protobufjs reads and
 * writes them here); unset fields are absent.
 */

export interface PartMessage {
  key: string;
  upstream: string;
  path: string;
  method?: string;
  timeout_ms: number;
  required?: boolean;
  stale_fallback?: { max_age_seconds?: number };
}

export interface CompositeRouteMessage {
  name: string;
  gateway: string;
  path: string;
  methods?: string[];
  timeout_ms: number;
  parts?: PartMessage[];
  parts_address: string;
  parts_port: number;
}
