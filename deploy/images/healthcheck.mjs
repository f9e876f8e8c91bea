// Container health probe for the Portico image: `node deploy/images/healthcheck.mjs <target>`,
// where target is `http://host:port/path` (healthy on a 2xx) or `grpc://host:port` (healthy when
// grpc.health.v1.Health/Check answers SERVING for the whole server). Plain JavaScript and no tsx,
// because compose runs it every few seconds and a TypeScript loader costs more than the probe.
import * as grpc from "@grpc/grpc-js";

const target = process.argv[2] ?? "";
const TIMEOUT_MS = 2000;

function httpProbe(url) {
  return fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) }).then(
    (res) => res.ok,
    () => false,
  );
}

function grpcProbe(address) {
  // HealthCheckRequest{service: ""} encodes to no bytes; HealthCheckResponse{status: SERVING}
  // is field 1 = 1, so the probe needs no proto files.
  const SERVING = Buffer.from([0x08, 0x01]);
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (b) => b,
      (b) => b,
      Buffer.alloc(0),
      { deadline: Date.now() + TIMEOUT_MS },
      (err, res) => {
        client.close();
        resolve(!err && Buffer.isBuffer(res) && res.equals(SERVING));
      },
    );
  });
}

let healthy = false;
if (target.startsWith("http://")) healthy = await httpProbe(target);
else if (target.startsWith("grpc://")) healthy = await grpcProbe(target.slice("grpc://".length));
else console.error(`usage: healthcheck.mjs http://host:port/path | grpc://host:port (got '${target}')`);
process.exit(healthy ? 0 : 1);
