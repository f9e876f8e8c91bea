/**
 * The config from Portico's control plane over xDS, as envoyproxy/ratelimit's xDS config provider
 * receives it: an ADS client in the `portico:policy` group subscribes to every
 * `portico.ratelimit.v1.RateLimitConfig` (one per domain). Each response is turned into the same
 * values the YAML reader produces and checked by the same parser; a config that does not parse
 * is refused (a NACK carrying every problem) and the running one is kept.
 */
import {
  XdsConfigSource as PolicyConfigSource,
  type XdsConfigSourceOptions,
  type ClientResource,
} from "@portico/common";
import protobuf from "protobufjs";
import { loadProtoRoot, POLICY_GROUP } from "@portico/contract";
import { ConfigError } from "./errors.js";
import { buildConfig, type ConfigSource } from "./load.js";
import type { Plain } from "./parse.js";
import type { RateLimitConfig } from "./types.js";

export const RATE_LIMIT_CONFIG_TYPE = "portico.ratelimit.v1.RateLimitConfig";
export const RATE_LIMIT_CONFIG_TYPE_URL = `type.googleapis.com/${RATE_LIMIT_CONFIG_TYPE}`;
export { POLICY_GROUP };

interface ProtoLimit {
  name?: string;
  replaces?: { name?: string }[];
  unit?: string;
  requests_per_unit?: number;
  unlimited?: boolean;
  unit_multiplier?: number;
  window?: string;
  algorithm?: string;
  burst?: number;
  calendar?: boolean;
  time_zone?: string;
  shadow_mode?: { value?: boolean };
}

interface ProtoDescriptor {
  key?: string;
  value?: string;
  rate_limit?: ProtoLimit;
  descriptors?: ProtoDescriptor[];
  shadow_mode?: boolean;
  detailed_metric?: boolean;
  rate_limits?: ProtoLimit[];
  share_threshold?: boolean;
  count_refused?: { value?: boolean };
  plans?: Record<string, { rate_limit?: ProtoLimit; rate_limits?: ProtoLimit[] }>;
  plan_key?: string;
}

interface ProtoConfig {
  name?: string;
  domain?: string;
  descriptors?: ProtoDescriptor[];
}

let configType: protobuf.Type | undefined;

function decode(bytes: Uint8Array): ProtoConfig {
  configType ??= loadProtoRoot(["portico/ratelimit/v1/ratelimit.proto"]).lookupType(RATE_LIMIT_CONFIG_TYPE);
  return configType.toObject(configType.decode(bytes), {
    enums: String,
    longs: Number,
    defaults: false,
  }) as ProtoConfig;
}

const flag = (b: boolean | undefined): Plain | undefined => (b ? "true" : undefined);
// A wrapper that is present holds false when its value is absent (proto3 leaves defaults out).
const wrapped = (w: { value?: boolean } | undefined): Plain | undefined =>
  w === undefined ? undefined : String(w.value ?? false);

/** Keeps the keys whose value is set, so the parser sees what a YAML file would have said. */
function compact(obj: Record<string, Plain | undefined>): { [k: string]: Plain } {
  const out: { [k: string]: Plain } = {};
  for (const [k, v] of Object.entries(obj)) if (v !== undefined) out[k] = v;
  return out;
}

function limitValue(l: ProtoLimit): Plain {
  const unlimited = l.unlimited === true;
  return compact({
    name: l.name || undefined,
    replaces: l.replaces?.length ? l.replaces.map((r) => ({ name: r.name ?? "" })) : undefined,
    unit: l.unit && l.unit !== "UNKNOWN" ? l.unit.toLowerCase() : undefined,
    // proto3 cannot tell 0 from unset: a limit without a count is a limit of 0, as upstream.
    requests_per_unit: unlimited && !l.requests_per_unit ? undefined : String(l.requests_per_unit ?? 0),
    unlimited: flag(unlimited),
    unit_multiplier: l.unit_multiplier ? String(l.unit_multiplier) : undefined,
    window: l.window || undefined,
    algorithm: l.algorithm && l.algorithm !== "FIXED_WINDOW" ? l.algorithm.toLowerCase() : undefined,
    burst: l.burst ? String(l.burst) : undefined,
    calendar: flag(l.calendar),
    time_zone: l.time_zone || undefined,
    shadow_mode: wrapped(l.shadow_mode),
  });
}

function limitsValue(one: ProtoLimit | undefined, many: ProtoLimit[] | undefined) {
  return {
    rate_limit: one ? limitValue(one) : undefined,
    rate_limits: many?.length ? many.map(limitValue) : undefined,
  };
}

function descriptorValue(d: ProtoDescriptor): Plain {
  const plans = d.plans && Object.keys(d.plans).length ? d.plans : undefined;
  return compact({
    key: d.key ?? "",
    value: d.value || undefined,
    ...limitsValue(d.rate_limit, d.rate_limits),
    descriptors: d.descriptors?.length ? d.descriptors.map(descriptorValue) : undefined,
    shadow_mode: flag(d.shadow_mode),
    detailed_metric: flag(d.detailed_metric),
    share_threshold: flag(d.share_threshold),
    count_refused: wrapped(d.count_refused),
    plans: plans
      ? Object.fromEntries(
          Object.entries(plans).map(([name, p]) => [name, compact(limitsValue(p.rate_limit, p.rate_limits))]),
        )
      : undefined,
    plan_key: d.plan_key || undefined,
  });
}

/** A `RateLimitConfig` resource → the YAML-shaped value the parser reads. */
export function configValue(message: ProtoConfig): Plain {
  return compact({
    domain: message.domain ?? "",
    descriptors: message.descriptors?.length ? message.descriptors.map(descriptorValue) : undefined,
  });
}

/**
 * The resources of one xDS state → a config, or a ConfigError naming each problem as
 * `xds:<resource>: <path>: <reason>`.
 */
export function configFromResources(resources: readonly ClientResource[]): RateLimitConfig {
  const sources: ConfigSource[] = [...resources]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((r) => {
      const file = `xds:${r.name}`;
      if (r.any.type_url !== RATE_LIMIT_CONFIG_TYPE_URL) {
        throw new ConfigError([{ file, path: "", reason: `unexpected resource type ${r.any.type_url}` }]);
      }
      let message: ProtoConfig;
      try {
        message = decode(r.any.value);
      } catch (err) {
        throw new ConfigError([{ file, path: "", reason: `cannot decode: ${(err as Error).message}` }]);
      }
      return { file, value: configValue(message) };
    });
  return buildConfig(sources);
}

/** The rate-limit service's config over xDS: one `portico.ratelimit.v1.RateLimitConfig` per domain. */
export class XdsConfigSource extends PolicyConfigSource<RateLimitConfig> {
  constructor(opts: XdsConfigSourceOptions<RateLimitConfig>) {
    super(
      {
        typeUrl: RATE_LIMIT_CONFIG_TYPE_URL,
        userAgent: "portico-ratelimit",
        what: "rate-limit config",
        build: configFromResources,
        describe: (c) => ({ domains: [...c.domains.keys()] }),
      },
      opts,
    );
  }
}
