/**
 * Exit codes: 0 done (for diff: no differences), 1 diff found differences, 2 usage error,
 * 3 written but not applied by every node (timeout or NACK), 4 refused by the API, 5 server
 * unreachable.
 */
export const EXIT = { ok: 0, differences: 1, usage: 2, notApplied: 3, refused: 4, unreachable: 5 } as const;

/** A failure the CLI reports in one message and ends with its exit code. */
export class CliError extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

export interface ApiResponse {
  status: number;
  text: string;
  json(): any;
}

/** The admin API as the CLI calls it: one request, its bearer token, JSON back. */
export interface Client {
  request(method: string, path: string, body?: string, contentType?: string): Promise<ApiResponse>;
  /** GET that must answer 200; anything else is the API's refusal. */
  get(path: string): Promise<any>;
}

export function client(server: string, token: string | undefined): Client {
  const request: Client["request"] = async (method, path, body, contentType) => {
    let res: globalThis.Response;
    try {
      res = await fetch(new URL(path, server), {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(contentType ? { "content-type": contentType } : {}),
          accept: "application/json",
        },
        body,
      });
    } catch (err) {
      throw new CliError(
        EXIT.unreachable,
        `cannot reach ${server}: ${(err as Error).cause ?? (err as Error).message}`,
      );
    }
    const text = await res.text();
    return { status: res.status, text, json: () => JSON.parse(text) };
  };
  return {
    request,
    async get(path) {
      const res = await request("GET", path);
      if (res.status !== 200) throw apiError(res);
      return res.json();
    },
  };
}

/** The API's `{code, message, details}` as lines a person reads, with exit code 4. */
export function apiError(res: { status: number; text: string }): CliError {
  try {
    const body = JSON.parse(res.text) as {
      code: string;
      message: string;
      details?: { field: string; reason: string }[];
    };
    const lines = [
      `error ${res.status} ${body.code}: ${body.message}`,
      ...(body.details ?? []).map((d) => `  ${d.field}: ${d.reason}`),
    ];
    return new CliError(EXIT.refused, lines.join("\n"));
  } catch {
    return new CliError(EXIT.refused, `error ${res.status}: ${res.text.slice(0, 500)}`);
  }
}
