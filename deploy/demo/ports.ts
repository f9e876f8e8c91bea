import net from "node:net";

/** Every port the demo listens on: what listens there, and the environment variable that moves it. */
export const DEMO_PORTS = {
  edge: { env: "PORTICO_DEMO_EDGE_PORT", port: 10000, what: "the edge Envoy's listener" },
  parts: { env: "PORTICO_DEMO_PARTS_PORT", port: 10001, what: "the edge Envoy's parts listener" },
  envoyAdmin: { env: "PORTICO_DEMO_ENVOY_ADMIN_PORT", port: 9901, what: "Envoy's admin interface" },
  admin: { env: "PORTICO_ADMIN_PORT", port: 9000, what: "the control plane's admin API" },
  xds: { env: "PORTICO_XDS_PORT", port: 18000, what: "the control plane's xDS" },
  hello: { env: "PORTICO_DEMO_HELLO_PORT", port: 8081, what: "the sample upstream 'hello'" },
  echo: { env: "PORTICO_DEMO_ECHO_PORT", port: 8082, what: "the sample upstream 'echo'" },
  authz: { env: "PORTICO_DEMO_AUTHZ_PORT", port: 9191, what: "ext-authz" },
  authzMetrics: {
    env: "PORTICO_DEMO_AUTHZ_METRICS_PORT",
    port: 9192,
    what: "ext-authz's metrics and /readyz",
  },
  ratelimit: { env: "PORTICO_DEMO_RATELIMIT_PORT", port: 8090, what: "the rate limiter" },
  ratelimitMetrics: {
    env: "PORTICO_DEMO_RATELIMIT_METRICS_PORT",
    port: 6070,
    what: "the rate limiter's metrics and /readyz",
  },
  aggregator: { env: "PORTICO_DEMO_AGGREGATOR_PORT", port: 8083, what: "the aggregator" },
} as const;

export type PortName = keyof typeof DEMO_PORTS;
export type DemoPorts = Record<PortName, number>;

/** A problem the person starting the demo can act on, said in one line. */
export interface DemoProblem {
  code: string;
  message: string;
}

export const isProblem = (x: unknown): x is DemoProblem =>
  typeof x === "object" && x !== null && "code" in x && "message" in x && !(x instanceof Error);

export const PORT_NAMES = Object.keys(DEMO_PORTS) as PortName[];

/**
 * The demo's ports: each variable that is set, else the default. `moved` names the ports a
 * variable set, since those are the ones the config file's own values no longer match.
 */
export function demoPorts(
  env: NodeJS.ProcessEnv = process.env,
): { ports: DemoPorts; moved: Set<PortName> } | DemoProblem {
  const ports = {} as DemoPorts;
  const moved = new Set<PortName>();
  for (const name of PORT_NAMES) {
    const { env: variable, port } = DEMO_PORTS[name];
    const text = env[variable];
    if (text === undefined || text === "") {
      ports[name] = port;
      continue;
    }
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1 || value > 65535)
      return { code: "bad_port", message: `${variable}=${text} is not a port number (1-65535)` };
    ports[name] = value;
    if (value !== port) moved.add(name);
  }
  const byPort = new Map<number, PortName>();
  for (const name of PORT_NAMES) {
    const other = byPort.get(ports[name]);
    if (other)
      return {
        code: "port_twice",
        message: `port ${ports[name]} is given to both ${DEMO_PORTS[other].what} and ${DEMO_PORTS[name].what}: set ${DEMO_PORTS[other].env} or ${DEMO_PORTS[name].env} to another port`,
      };
    byPort.set(ports[name], name);
  }
  return { ports, moved };
}

function portTaken(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "EADDRINUSE"));
    server.listen({ port, host, exclusive: true }, () => server.close(() => resolve(false)));
  });
}

/** What to say when ports are taken: which, by what of the demo's, and the variable that moves each. */
export function portsTaken(taken: readonly { name: PortName; port: number }[]): DemoProblem {
  const list = taken.map(({ name, port }) => `${port} (${DEMO_PORTS[name].what}: ${DEMO_PORTS[name].env})`);
  return {
    code: "ports_in_use",
    message:
      `${taken.length === 1 ? "port" : "ports"} already in use: ${list.join(", ")}. ` +
      `Stop what holds ${taken.length === 1 ? "it" : "them"} (another demo still running?) or move ` +
      `${taken.length === 1 ? "it" : "them"}, e.g. ${DEMO_PORTS[taken[0]!.name].env}=${taken[0]!.port + 100} npm run demo`,
  };
}

/** Checks every port before anything starts, so a taken one is named rather than met mid-start. */
export async function checkPortsFree(ports: DemoPorts, host = "127.0.0.1"): Promise<DemoProblem | undefined> {
  const taken: { name: PortName; port: number }[] = [];
  for (const name of PORT_NAMES)
    if (await portTaken(ports[name], host)) taken.push({ name, port: ports[name] });
  return taken.length > 0 ? portsTaken(taken) : undefined;
}

/** The demo's port an EADDRINUSE error names, when it is one of them. */
export function portOfError(err: unknown, ports: DemoPorts): PortName | undefined {
  const e = err as NodeJS.ErrnoException & { port?: number };
  if (e?.code !== "EADDRINUSE") return undefined;
  const port = e.port ?? Number(/:(\d+)\s*$/.exec(e.message)?.[1]);
  return PORT_NAMES.find((name) => ports[name] === port);
}
