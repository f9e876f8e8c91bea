// A gRPC server that answers every call of one method with the same bytes: what grpc-js itself
// costs on this machine, the ceiling for any service written on it. It runs with the options of
// Portico's services that change the cost of a call, so the comparison is like for like.
//   node --conditions=source --import tsx bench/lib/grpc-echo.ts PORT METHOD_PATH ANSWER_BASE64
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";

/**
 * ext-authz and the rate-limit service turn channelz off (its bookkeeping costs a few percent of
 * every call); a ceiling with it on would sit below what the services can reach.
 */
export const SERVICE_SERVER_OPTIONS: grpc.ServerOptions = { "grpc.enable_channelz": 0 };

const id = (b: Buffer) => b;

/**
 * Serves `methodPath` (`/package.Service/Method`) on loopback, answering `answer` to every call.
 * `read`, when given, reads each request first (a floor that decodes what a service must decode).
 */
export async function startFixedAnswerServer(
  port: number,
  methodPath: string,
  answer: Buffer,
  read?: (request: Buffer) => unknown,
): Promise<grpc.Server> {
  const server = new grpc.Server(SERVICE_SERVER_OPTIONS);
  const name = methodPath.split("/").pop()!;
  server.addService(
    {
      [name]: {
        path: methodPath,
        requestStream: false,
        responseStream: false,
        requestSerialize: id,
        requestDeserialize: read ?? id,
        responseSerialize: id,
        responseDeserialize: id,
      },
    },
    { [name]: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, answer) },
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  return server;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [port, methodPath, answer] = process.argv.slice(2);
  const server = await startFixedAnswerServer(Number(port), methodPath!, Buffer.from(answer!, "base64"));
  process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
}
