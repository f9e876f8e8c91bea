import express, { type Express } from "express";
import type { Registry } from "prom-client";
import type { FleetState } from "../xds/fleet.js";

export interface OpsDeps {
  registry: Registry;
  fleet: FleetState;
  /** Ready once a config has been published. */
  ready: () => boolean;
  /** The config currently served and the last refused one, if any. */
  configState: () => object;
}

/** Health, readiness, metrics and fleet status: the operator's view of one control plane. */
export function opsRouter(deps: OpsDeps): express.Router {
  const r = express.Router();
  r.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  r.get("/readyz", (_req, res) => {
    const ready = deps.ready();
    res.status(ready ? 200 : 503).json({ status: ready ? "ready" : "no config published yet" });
  });
  r.get("/metrics", async (_req, res) => {
    res.type(deps.registry.contentType).send(await deps.registry.metrics());
  });
  r.get("/api/v1/status", (_req, res) => {
    res.json({ config: deps.configState(), nodes: deps.fleet.list() });
  });
  return r;
}

export function opsApp(deps: OpsDeps): Express {
  const app = express();
  app.disable("x-powered-by");
  app.use(opsRouter(deps));
  app.use((_req, res) => {
    res.status(404).json({ code: "not_found", message: "no such endpoint", details: [] });
  });
  return app;
}
