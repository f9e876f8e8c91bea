import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { buildSnapshots } from "../../src/config/publish.js";
import type { Config } from "../../src/model/schema.js";
import { parseConfigText } from "../../src/model/validate.js";
import { routesOf } from "../../src/translate/context.js";
import { HTTP_FILTER_ORDER, prepareConfig, type HttpFeature } from "../../src/translate/feature.js";
import { HTTP_FEATURES } from "../../src/translate/features/index.js";
import { translate } from "../../src/translate/translate.js";
import { TypeUrl } from "../../src/xds/types.js";
import { expectGolden, GOLDEN_DIR, shownResources } from "./golden.js";

/** One fixture per feature, named after it: `features/<name>.yaml` in, `features/<name>.json` out. */
const dir = path.join(GOLDEN_DIR, "features");
const fixture = (f: HttpFeature) => f.name.replaceAll(" ", "-");

const nonEmpty = <T extends object>(o: T): Partial<T> =>
  Object.fromEntries(
    Object.entries(o).filter(
      ([, v]) => v !== undefined && (typeof v !== "object" || Object.keys(v).length > 0),
    ),
  ) as Partial<T>;

/**
 * What one feature adds to each gateway of the config, as the translator asks it: per listener
 * its filters, connection manager, router and route table fields and route patches; per gateway
 * its upstreams, variants of upstreams, listeners, clusters and ECDS filter configs. The config is prepared by every feature first, as translate() does.
 */
function contribution(feature: HttpFeature, input: Config): object {
  const config = prepareConfig(input, HTTP_FEATURES);
  return Object.fromEntries(
    config.gateways.map((gateway) => {
      const ctx = { config, gateway };
      const listeners = Object.fromEntries(
        gateway.listeners.map((listener) => {
          const routes = routesOf(gateway, listener, config.routes);
          const patch = feature.listener?.(ctx, listener, routes);
          const perRoute = routes.flatMap((r) => {
            const p = nonEmpty(patch?.route?.(r) ?? {});
            return Object.keys(p).length ? [[r.name, p]] : [];
          });
          return [
            listener.name,
            nonEmpty({
              httpFilters: patch?.httpFilters,
              connectionManager: patch?.connectionManager,
              router: patch?.router,
              routeTable: patch?.routeTable,
              routes: Object.fromEntries(perRoute),
            }),
          ];
        }),
      );
      return [
        gateway.name,
        nonEmpty({
          listeners: nonEmpty(listeners),
          upstreams: feature.upstreams?.(ctx),
          upstreamVariants: feature.upstreamVariants?.(ctx),
          listenerResources: shownResources(feature.listeners?.(ctx) ?? []),
          clusters: shownResources(feature.clusters?.(ctx) ?? []),
          extensionConfigs: shownResources(feature.extensionConfigs?.(ctx) ?? []),
        }),
      ];
    }),
  );
}

describe("translator features", () => {
  for (const feature of HTTP_FEATURES) {
    it(`${feature.name}: matches the golden file of what it adds`, () => {
      const config = parseConfigText(fs.readFileSync(path.join(dir, `${fixture(feature)}.yaml`), "utf8"));
      expectGolden(dir, fixture(feature), contribution(feature, config));
      // The fixture is a whole config: it translates and encodes against Envoy's schema.
      expect(() => buildSnapshots(config)).not.toThrow();
    });
  }

  it("puts every listener's filters in HTTP_FILTER_ORDER, the router last", () => {
    const config = parseConfigText(fs.readFileSync(path.join(GOLDEN_DIR, "features.yaml"), "utf8"));
    const listener = translate(config)
      .get("edge")!
      .find((r) => r.typeUrl === TypeUrl.Listener)!.message as any;
    const names: string[] = listener.filter_chains[0].filters[0].typed_config.http_filters.map(
      (f: { name: string }) => f.name,
    );
    expect(names).toEqual(HTTP_FILTER_ORDER.filter((n) => names.includes(n)));
    expect(names.at(-1)).toBe("envoy.filters.http.router");
    expect(names.length).toBeGreaterThan(5);
  });

  it("keeps features apart from the walk: a feature imports the seam, the model and other features only", () => {
    const features = path.join(
      path.dirname(new URL(import.meta.url).pathname),
      "../../src/translate/features",
    );
    const allowed =
      /^(\.\/[\w-]+|\.\.\/(feature|context|ratelimit-policy)|\.\.\/\.\.\/(model|xds)\/[\w-]+)\.js$/;
    for (const file of fs.readdirSync(features)) {
      const text = fs.readFileSync(path.join(features, file), "utf8");
      for (const [, from] of text.matchAll(/from "(\.[^"]+)"/g))
        expect(from, `${file} imports ${from}`).toMatch(allowed);
    }
  });
});
