/**
 * How large a request may be: headers per listener (the connection manager's limit) and bodies per
 * listener or route (Envoy's `buffer` filter, which answers 413 past its limit).
 */
import { TYPE_PREFIX } from "@portico/contract";
import type { HttpFeature, HttpFilterName } from "../feature.js";

const BUFFER = "envoy.extensions.filters.http.buffer.v3.Buffer";
const BUFFER_PER_ROUTE = "envoy.extensions.filters.http.buffer.v3.BufferPerRoute";
const BUFFER_FILTER: HttpFilterName = "envoy.filters.http.buffer";
/** The buffer filter needs a ceiling even where only some routes set one. */
const MAX_BUFFER = 1_073_741_824;

export const requestLimits: HttpFeature = {
  name: "request limits",
  listener: (_ctx, listener, routes) => {
    const listenerLimited = listener.maxBodyBytes !== undefined;
    const bodyLimited = listenerLimited || routes.some((r) => r.maxBodyBytes !== undefined);
    return {
      connectionManager:
        listener.maxRequestHeadersKb !== undefined
          ? { max_request_headers_kb: { value: listener.maxRequestHeadersKb } }
          : {},
      ...(bodyLimited
        ? {
            httpFilters: [
              {
                name: BUFFER_FILTER,
                typed_config: {
                  "@type": TYPE_PREFIX + BUFFER,
                  max_request_bytes: { value: listener.maxBodyBytes ?? MAX_BUFFER },
                },
              },
            ],
            // A route without a limit of its own keeps the listener's, or buffers nothing.
            route: (r) =>
              r.maxBodyBytes !== undefined
                ? {
                    perFilterConfig: {
                      [BUFFER_FILTER]: {
                        "@type": TYPE_PREFIX + BUFFER_PER_ROUTE,
                        buffer: { max_request_bytes: { value: r.maxBodyBytes } },
                      },
                    },
                  }
                : listenerLimited
                  ? undefined
                  : {
                      perFilterConfig: {
                        [BUFFER_FILTER]: { "@type": TYPE_PREFIX + BUFFER_PER_ROUTE, disabled: true },
                      },
                    },
          }
        : {}),
    };
  },
};
