/** One route as an Envoy route entry: its match, its action, its header edits, its features' config. */
import { duration, struct } from "@portico/contract";
import type { Route } from "../model/schema.js";
import type { RoutePatch } from "./feature.js";
import { routeMatch } from "./route-match.js";

function headerEdits(edits: Route["requestHeaders"], prefix: "request" | "response"): object {
  if (!edits) return {};
  return {
    ...(edits.set
      ? {
          [`${prefix}_headers_to_add`]: Object.entries(edits.set).map(([key, value]) => ({
            header: { key, value },
            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
          })),
        }
      : {}),
    ...(edits.remove ? { [`${prefix}_headers_to_remove`]: edits.remove } : {}),
  };
}

const REDIRECT_CODE: Record<number, string> = {
  301: "MOVED_PERMANENTLY",
  302: "FOUND",
  303: "SEE_OTHER",
  307: "TEMPORARY_REDIRECT",
  308: "PERMANENT_REDIRECT",
};

function routeAction(r: Route): Record<string, unknown> {
  if (r.redirect) {
    const rd = r.redirect;
    return {
      redirect: {
        ...(rd.host !== undefined ? { host_redirect: rd.host } : {}),
        ...(rd.path !== undefined ? { path_redirect: rd.path } : {}),
        ...(rd.prefix !== undefined ? { prefix_rewrite: rd.prefix } : {}),
        ...(rd.https ? { https_redirect: true } : {}),
        response_code: REDIRECT_CODE[rd.status],
      },
    };
  }
  if (r.directResponse) {
    const d = r.directResponse;
    return {
      direct_response: {
        status: d.status,
        ...(d.body !== undefined ? { body: { inline_string: d.body } } : {}),
      },
      ...(d.contentType
        ? {
            response_headers_to_add: [
              {
                header: { key: "content-type", value: d.contentType },
                append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
              },
            ],
          }
        : {}),
    };
  }
  const target =
    r.upstream !== undefined
      ? { cluster: r.upstream }
      : {
          weighted_clusters: {
            clusters: r.upstreams!.map((w) => ({ name: w.name, weight: { value: w.weight } })),
          },
        };
  return {
    route: {
      ...target,
      ...(r.rewrite?.prefix !== undefined ? { prefix_rewrite: r.rewrite.prefix } : {}),
      ...(r.rewrite?.regex
        ? {
            regex_rewrite: {
              pattern: { regex: r.rewrite.regex.pattern },
              substitution: r.rewrite.regex.substitution,
            },
          }
        : {}),
      ...(r.rewrite?.host !== undefined ? { host_rewrite_literal: r.rewrite.host } : {}),
      ...(r.timeoutMs !== undefined ? { timeout: duration(r.timeoutMs) } : {}),
    },
  };
}

/** A route entry's `metadata` field holding `byNamespace`; nothing when it is empty. */
export function routeMetadata(byNamespace: RoutePatch["metadata"]): object {
  const metadata = Object.entries(byNamespace ?? {});
  return metadata.length
    ? { metadata: { filter_metadata: Object.fromEntries(metadata.map(([ns, m]) => [ns, struct(m)])) } }
    : {};
}

/** The route's entry, with what its features add (`patch`, all of them combined). */
export function routeEntry(r: Route, patch: RoutePatch): object {
  const action = routeAction(r);
  if (patch.action && action.route) Object.assign(action.route as object, patch.action);
  const edits = {
    ...headerEdits(r.requestHeaders, "request"),
    ...headerEdits(r.responseHeaders, "response"),
  } as Record<string, unknown>;
  // A direct response may already carry a content-type header to add, and features add theirs.
  const added = [
    ...((action.response_headers_to_add as unknown[] | undefined) ?? []),
    ...((edits.response_headers_to_add as unknown[] | undefined) ?? []),
    ...(patch.responseHeadersToAdd ?? []),
  ];
  delete action.response_headers_to_add;
  if (added.length) edits.response_headers_to_add = added;
  if (patch.requestHeadersToAdd?.length) {
    edits.request_headers_to_add = [
      ...((edits.request_headers_to_add as unknown[] | undefined) ?? []),
      ...patch.requestHeadersToAdd,
    ];
  }
  const perFilter = patch.perFilterConfig ?? {};
  return {
    name: r.name,
    match: routeMatch(r.match, patch.alsoMethods),
    ...action,
    ...edits,
    ...routeMetadata(patch.metadata),
    ...(Object.keys(perFilter).length ? { typed_per_filter_config: perFilter } : {}),
  };
}
