import fs from "node:fs";
import path from "node:path";
import { isMap, isSeq, parseDocument, type YAMLMap } from "yaml";
import type { DemoPorts, PortName } from "./ports.js";

/** The upstreams of deploy/demo/portico.yaml that the demo itself serves, by the port each is on. */
const UPSTREAM_PORTS: Partial<Record<PortName, string>> = {
  hello: "hello",
  echo: "echo",
  authz: "ext-authz",
  ratelimit: "ratelimit",
  aggregator: "aggregator",
};

function named(seq: unknown, name: string): YAMLMap | undefined {
  if (!isSeq(seq)) return undefined;
  return seq.items.find((item): item is YAMLMap => isMap(item) && item.get("name") === name);
}

/**
 * The config text with the ports that moved written in: the `edge` gateway's first listener and
 * parts listener, and every endpoint of the upstreams the demo serves. Anything else, comments
 * included, stays; a text that does not parse is returned as it is, for the control plane to
 * refuse with its reason.
 */
export function withDemoPorts(text: string, ports: DemoPorts, moved: ReadonlySet<PortName>): string {
  if (moved.size === 0) return text;
  const doc = parseDocument(text);
  if (doc.errors.length > 0) return text;
  const edge = named(doc.get("gateways"), "edge");
  const listener = edge?.get("listeners");
  if (moved.has("edge") && isSeq(listener) && isMap(listener.items[0]))
    listener.items[0].set("port", ports.edge);
  const parts = edge?.getIn(["aggregator", "partsListener"]);
  if (moved.has("parts") && isMap(parts)) parts.set("port", ports.parts);
  for (const [port, upstream] of Object.entries(UPSTREAM_PORTS) as [PortName, string][]) {
    if (!moved.has(port)) continue;
    const endpoints = named(doc.get("upstreams"), upstream)?.get("endpoints");
    if (isSeq(endpoints)) for (const e of endpoints.items) if (isMap(e)) e.set("port", ports[port]);
  }
  return doc.toString();
}

/**
 * Calls `onChange` with the file's text after every edit (a burst of writes is one call): the
 * directory is watched, since editors that save by renaming end a watch on the file itself.
 * Returns the function that stops following.
 */
export function followFile(file: string, onChange: (text: string) => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const watcher = fs.watch(path.dirname(file), (_event, name) => {
    if (name !== null && name !== path.basename(file)) return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      let text: string;
      try {
        text = fs.readFileSync(file, "utf8");
      } catch {
        return; // Mid-save (renamed away): the next event brings the whole file.
      }
      onChange(text);
    }, 50);
  });
  return () => {
    clearTimeout(timer);
    watcher.close();
  };
}
