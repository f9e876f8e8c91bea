import http from "node:http";

/**
 * A sample upstream service for the demo and the compose file: answers every request with JSON
 * saying which service answered and what it received (path, method, the request id Envoy set).
 */
export function startSampleUpstream(name: string, port: number, host = "127.0.0.1"): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({
      service: name,
      message: `hello from ${name}`,
      method: req.method,
      path: req.url,
      requestId: req.headers["x-request-id"] ?? null,
      // Set by the gateway after authentication (`anonymous` callers get none).
      consumer: req.headers["x-portico-consumer"] ?? null,
      plan: req.headers["x-portico-plan"] ?? null,
    });
    res.writeHead(200, { "content-type": "application/json", "x-served-by": name });
    res.end(body + "\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const name = process.env.SERVICE_NAME ?? "sample";
  const port = Number(process.env.PORT ?? 8081);
  const server = await startSampleUpstream(name, port, process.env.HOST ?? "0.0.0.0");
  console.log(JSON.stringify({ msg: "sample upstream listening", name, port }));
  // As PID 1 in a container a signal without a handler is ignored, and `docker stop` would wait
  // its whole timeout before killing the process.
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
