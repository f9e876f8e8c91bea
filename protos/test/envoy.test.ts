import { describe, expect, it } from "vitest";
import {
  decodeMessage,
  duration,
  encodeAny,
  encodeMessage,
  packAny,
  unpackAny,
  TYPE_PREFIX,
} from "../src/envoy.js";

const HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

describe("Envoy proto loader", () => {
  it("packs nested typed_config written with @type and decodes it back", () => {
    const listener = {
      name: "edge/http",
      address: { socket_address: { address: "127.0.0.1", port_value: 10000 } },
      filter_chains: [
        {
          filters: [
            {
              name: "envoy.filters.network.http_connection_manager",
              typed_config: {
                "@type": TYPE_PREFIX + HCM,
                stat_prefix: "http",
                rds: {
                  route_config_name: "edge/http",
                  config_source: { ads: {}, resource_api_version: "V3" },
                },
              },
            },
          ],
        },
      ],
    };
    const any = packAny("envoy.config.listener.v3.Listener", listener);
    expect(any.type_url).toBe("type.googleapis.com/envoy.config.listener.v3.Listener");
    const back = unpackAny<any>(any);
    expect(back.name).toBe("edge/http");
    const tc = back.filter_chains[0].filters[0].typed_config;
    expect(tc.type_url).toBe(TYPE_PREFIX + HCM);
    const hcm = decodeMessage<any>(HCM, tc.value);
    expect(hcm.rds.route_config_name).toBe("edge/http");
    expect(hcm.rds.config_source.resource_api_version).toBe("V3");
  });

  it("names an unknown field instead of dropping it", () => {
    expect(() => encodeMessage("envoy.config.cluster.v3.Cluster", { name: "a", conect_timeout: {} })).toThrow(
      /conect_timeout: no such field/,
    );
    expect(() =>
      encodeMessage("envoy.config.listener.v3.Listener", {
        filter_chains: [
          { filters: [{ name: "x", typed_config: { "@type": TYPE_PREFIX + HCM, stat_prefx: "a" } }] },
        ],
      }),
    ).toThrow(/filter_chains\[0\]\.filters\[0\]\.typed_config<HttpConnectionManager>\.stat_prefx/);
  });

  it("rejects a wrongly typed scalar", () => {
    expect(() => encodeMessage("envoy.config.cluster.v3.Cluster", { name: 5 })).toThrow(
      /name: string expected/,
    );
  });

  it("encodes an Any deterministically", () => {
    const a = encodeAny(
      packAny("envoy.config.cluster.v3.Cluster", { name: "u", connect_timeout: duration(250) }),
    );
    const b = encodeAny(
      packAny("envoy.config.cluster.v3.Cluster", { name: "u", connect_timeout: duration(250) }),
    );
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const any = decodeMessage<any>("google.protobuf.Any", a);
    const cluster = unpackAny<any>(any);
    expect(cluster.connect_timeout).toEqual({ seconds: 0, nanos: 250_000_000 });
  });
});
