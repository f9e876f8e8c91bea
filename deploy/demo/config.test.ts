import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { withDemoPorts } from "./config.js";
import { demoPorts, type DemoPorts, type PortName } from "./ports.js";

const TEXT = `# the demo
gateways:
  - name: edge
    listeners: [{ name: http, port: 10000 }]
    aggregator: { upstream: aggregator, partsListener: { port: 10001 } }
upstreams:
  - name: hello
    endpoints: [{ host: 127.0.0.1, port: 8081 }]
  - name: other
    endpoints: [{ host: 127.0.0.1, port: 8081 }]
`;

describe("the demo's config with moved ports", () => {
  const { ports } = demoPorts({}) as { ports: DemoPorts };
  const moved = { ...ports, edge: 20000, parts: 20001, hello: 20081 };

  it("writes each moved port where the config names it, and nothing else", () => {
    const out = withDemoPorts(TEXT, moved, new Set<PortName>(["edge", "parts", "hello"]));
    expect(out).toMatch(/^# the demo/);
    expect(parse(out)).toEqual({
      gateways: [
        {
          name: "edge",
          listeners: [{ name: "http", port: 20000 }],
          aggregator: { upstream: "aggregator", partsListener: { port: 20001 } },
        },
      ],
      upstreams: [
        { name: "hello", endpoints: [{ host: "127.0.0.1", port: 20081 }] },
        { name: "other", endpoints: [{ host: "127.0.0.1", port: 8081 }] },
      ],
    });
  });

  it("leaves the text as it is when nothing moved, or when it does not parse", () => {
    expect(withDemoPorts(TEXT, ports, new Set())).toBe(TEXT);
    expect(withDemoPorts("gateways: [", moved, new Set<PortName>(["edge"]))).toBe("gateways: [");
  });
});
