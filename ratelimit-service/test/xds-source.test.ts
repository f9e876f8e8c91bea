/** The xDS config type read through the YAML parser: the same config, the same errors. */
import { describe, expect, it } from "vitest";
import { encodeMessage } from "@portico/contract";
import { ConfigError } from "../src/config/errors.js";
import { matchDescriptor } from "../src/config/match.js";
import type { RateLimitConfig } from "../src/config/types.js";
import {
  configFromResources,
  RATE_LIMIT_CONFIG_TYPE,
  RATE_LIMIT_CONFIG_TYPE_URL,
} from "../src/config/xds-source.js";
import { yamlConfig } from "./helpers.js";

function fromXds(...messages: { name: string; [k: string]: unknown }[]): RateLimitConfig {
  return configFromResources(
    messages.map((m) => ({
      name: m.name,
      version: "1",
      any: { type_url: RATE_LIMIT_CONFIG_TYPE_URL, value: encodeMessage(RATE_LIMIT_CONFIG_TYPE, m) },
    })),
  );
}

/** The config without where it was read from, for comparing a file with a resource. */
function shape(c: RateLimitConfig): unknown {
  return JSON.parse(
    JSON.stringify([...c.domains.values()], (k, v: unknown) =>
      k === "file" || k === "source" ? undefined : v instanceof Map ? [...v] : v,
    ),
  );
}

describe("rate-limit config over xDS", () => {
  it("reads upstream's fields and Portico's extensions as the YAML loader reads the same config", () => {
    const yaml = yamlConfig(`
domain: edge
descriptors:
  - key: api_key
    count_refused: false
    rate_limits:
      - { unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 20, name: fast }
      - { unit: month, requests_per_unit: 1000, calendar: true, time_zone: Europe/Paris }
    plan_key: tier
    plans:
      gold: { rate_limit: { unit: minute, unit_multiplier: 5, requests_per_unit: 500, algorithm: sliding_window } }
      staff: { rate_limit: { unlimited: true, replaces: [{ name: fast }] } }
  - key: path
    value: "/api/*"
    share_threshold: true
    shadow_mode: true
    detailed_metric: true
    rate_limit: { window: 30s, requests_per_unit: 100, shadow_mode: false }
    descriptors:
      - key: method
        rate_limit: { unit: hour, requests_per_unit: 0 }
`);
    const xds = fromXds({
      name: "edge",
      domain: "edge",
      descriptors: [
        {
          key: "api_key",
          count_refused: { value: false },
          rate_limits: [
            { unit: "SECOND", requests_per_unit: 10, algorithm: "TOKEN_BUCKET", burst: 20, name: "fast" },
            { unit: "MONTH", requests_per_unit: 1000, calendar: true, time_zone: "Europe/Paris" },
          ],
          plan_key: "tier",
          plans: {
            gold: {
              rate_limit: {
                unit: "MINUTE",
                unit_multiplier: 5,
                requests_per_unit: 500,
                algorithm: "SLIDING_WINDOW",
              },
            },
            staff: { rate_limit: { unlimited: true, replaces: [{ name: "fast" }] } },
          },
        },
        {
          key: "path",
          value: "/api/*",
          share_threshold: true,
          shadow_mode: true,
          detailed_metric: true,
          rate_limit: { window: "30s", requests_per_unit: 100, shadow_mode: { value: false } },
          // proto3 cannot send 0: an absent count is a limit of 0, as upstream.
          descriptors: [{ key: "method", rate_limit: { unit: "HOUR" } }],
        },
      ],
    });
    expect(shape(xds)).toEqual(shape(yaml));
    expect(
      matchDescriptor(xds, "edge", [
        { key: "api_key", value: "k" },
        { key: "tier", value: "gold" },
      ])?.set,
    ).toMatchObject({ limits: [{ algorithm: "sliding_window", unitMultiplier: 5 }] });
  });

  it("refuses what the YAML loader refuses, naming the resource, the path and the reason", () => {
    const refuse = (...m: Parameters<typeof fromXds>) => {
      try {
        fromXds(...m);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error("accepted");
    };
    expect(
      refuse({
        name: "edge",
        domain: "edge",
        descriptors: [
          {
            key: "a",
            rate_limit: { unit: "DAY", requests_per_unit: 1, calendar: true, time_zone: "Mars/Olympus" },
          },
          { key: "b", rate_limit: { requests_per_unit: 1 } },
        ],
      }),
    ).toBe(
      [
        "xds:edge: descriptors[0].rate_limit.time_zone: unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Paris)",
        "xds:edge: descriptors[1].rate_limit.unit: rate limit unit is required (second, minute, hour, day, week, month, year)",
      ].join("\n"),
    );
    expect(refuse({ name: "a", domain: "edge" }, { name: "b", domain: "edge" })).toMatch(
      /xds:b: domain: duplicate domain 'edge' \(also in xds:a\)/,
    );
    expect(refuse({ name: "a" })).toMatch(/xds:a: domain: config file cannot have empty domain/);
  });
});
