import * as grpc from "@grpc/grpc-js";
import type protobuf from "protobufjs";
import { loadProtoRoot } from "@portico/contract";

/** `protos/portico/sample/v1/bookstore.proto`, the sample service REST calls are transcoded to. */
export const BOOKSTORE_PROTO = "portico/sample/v1/bookstore.proto";
export const BOOKSTORE_SERVICE = "portico.sample.v1.Bookstore";

export interface Book {
  id: number;
  title: string;
  author: string;
  published_year?: number;
  tags?: string[];
}

export interface BookstoreCall {
  method: string;
  request: Record<string, unknown>;
  /** The request's metadata as the service saw it (`content-type` shows it arrived as gRPC). */
  metadata: Record<string, unknown>;
}

export interface GrpcBookstore {
  readonly port: number;
  /** Every call so far, oldest first. */
  readonly calls: BookstoreCall[];
  close(): Promise<void>;
}

const SEED: Book[] = [
  {
    id: 1,
    title: "The Left Hand of Darkness",
    author: "Ursula K. Le Guin",
    published_year: 1969,
    tags: ["sf"],
  },
  { id: 2, title: "A Wizard of Earthsea", author: "Ursula K. Le Guin", published_year: 1968 },
  { id: 3, title: "Kindred", author: "Octavia E. Butler", published_year: 1979 },
];

type Handler = (req: Record<string, unknown>) => Record<string, unknown> | grpc.ServiceError;

function notFound(id: unknown): grpc.ServiceError {
  return Object.assign(new Error(`no book with id ${String(id)}`), {
    code: grpc.status.NOT_FOUND,
    details: `no book with id ${String(id)}`,
    metadata: new grpc.Metadata(),
  });
}

/**
 * A grpc-js implementation of the sample Bookstore, in memory: GetBook, CreateBook, ListBooks and
 * DeleteBook, with NOT_FOUND for an id it does not hold. It knows nothing of HTTP or JSON.
 */
export function startGrpcBookstore(opts: { port?: number } = {}): Promise<GrpcBookstore> {
  const root: protobuf.Root = loadProtoRoot([BOOKSTORE_PROTO]);
  const service = root.lookupService(BOOKSTORE_SERVICE);
  const books = new Map(SEED.map((b) => [b.id, { ...b }]));
  let nextId = Math.max(...books.keys()) + 1;
  const calls: BookstoreCall[] = [];

  const handlers: Record<string, Handler> = {
    GetBook: (req) => books.get(Number(req.id)) ?? notFound(req.id),
    CreateBook: (req) => {
      const book = { ...(req.book as Book), id: nextId++ };
      books.set(book.id, book);
      return book;
    },
    ListBooks: (req) => {
      const all = [...books.values()].filter((b) => !req.author || b.author === req.author);
      const size = Number(req.page_size ?? 0);
      return { books: size > 0 ? all.slice(0, size) : all };
    },
    DeleteBook: (req) => (books.delete(Number(req.id)) ? {} : notFound(req.id)),
  };

  const definition: Record<
    string,
    grpc.MethodDefinition<Record<string, unknown>, Record<string, unknown>>
  > = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const m of service.methodsArray) {
    const input = root.lookupType(m.requestType);
    const output = root.lookupType(m.responseType);
    definition[m.name] = {
      path: `/${BOOKSTORE_SERVICE}/${m.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (v: Record<string, unknown>) =>
        Buffer.from(input.encode(input.fromObject(v)).finish()),
      requestDeserialize: (b: Buffer) => input.toObject(input.decode(b), { longs: Number }),
      responseSerialize: (v: Record<string, unknown>) =>
        Buffer.from(output.encode(output.fromObject(v)).finish()),
      responseDeserialize: (b: Buffer) => output.toObject(output.decode(b), { longs: Number }),
    };
    implementation[m.name] = (
      call: grpc.ServerUnaryCall<Record<string, unknown>, Record<string, unknown>>,
      callback: grpc.sendUnaryData<Record<string, unknown>>,
    ) => {
      calls.push({ method: m.name, request: call.request, metadata: call.metadata.getMap() });
      const result = handlers[m.name]!(call.request);
      if (result instanceof Error) callback(result);
      else callback(null, result);
    };
  }
  const server = new grpc.Server();
  server.addService(definition, implementation);
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
      if (err) return reject(err);
      resolve({
        port,
        calls,
        close: () =>
          new Promise<void>((done) => {
            server.tryShutdown(() => done());
            // Envoy keeps its HTTP/2 connection open; do not wait for it to go.
            setTimeout(() => {
              server.forceShutdown();
              done();
            }, 1000).unref();
          }),
      });
    });
  });
}
