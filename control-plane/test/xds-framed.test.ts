import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { framed, FRAMED_WRITES } from "../src/xds/framed.js";

// A message framed once is written by grpc-js as it is, and one grpc-js frames itself still works,
// on one stream: what every xDS stream does when it sends a shared response.
const identity = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const METHOD = "/portico.test.Framed/Echo";
const service: grpc.ServiceDefinition = {
  Echo: {
    path: METHOD,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity.serialize,
    requestDeserialize: identity.deserialize,
    responseSerialize: identity.serialize,
    responseDeserialize: identity.deserialize,
  },
};

describe("framed writes", () => {
  const server = new grpc.Server();
  let port = 0;
  const sent = [
    framed(Buffer.from("a shared response")),
    Buffer.from("a response of this stream alone"),
    framed(Buffer.alloc(300_000, 7)),
    framed(Buffer.alloc(0)),
  ];

  beforeAll(async () => {
    server.addService(service, {
      Echo: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        for (const m of sent) call.write(m);
        call.end();
      },
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
  });
  afterAll(() => server.forceShutdown());

  it("is what the installed grpc-js allows", () => {
    expect(FRAMED_WRITES).toBe(true);
  });

  it("delivers each message once, framed here or by grpc-js", async () => {
    const Client = grpc.makeGenericClientConstructor(service, "Framed");
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const call = (client as unknown as { Echo: () => grpc.ClientDuplexStream<Buffer, Buffer> }).Echo();
    const received: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      call.on("data", (b: Buffer) => received.push(b));
      call.on("error", reject);
      call.on("end", () => resolve());
      call.end();
    });
    client.close();
    expect(received.map((b) => b.toString("base64"))).toEqual([
      Buffer.from("a shared response").toString("base64"),
      Buffer.from("a response of this stream alone").toString("base64"),
      Buffer.alloc(300_000, 7).toString("base64"),
      "",
    ]);
  });
});
