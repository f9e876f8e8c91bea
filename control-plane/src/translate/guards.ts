/**
 * Route entries that answer before a request reaches a route: 400 when a required header is absent,
 * 405 with Allow for a path served only for some methods. Both are JSON, like Portico's errors.
 */
import type { Route } from "../model/schema.js";
import type { RoutePatch } from "./feature.js";
import { routeMatch } from "./route-match.js";

const jsonHeader = [
  { header: { key: "content-type", value: "application/json" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
];

/** Answers 400 naming the header when a required one is absent; placed just before its route. */
export function requiredHeaderGuards(r: Route, patch: RoutePatch): object[] {
  return (r.requiredHeaders ?? []).map((h) => ({
    name: `${r.name}/missing-${h}`,
    match: routeMatch(r.match, patch.alsoMethods, [
      { name: h, present_match: true, invert_match: true },
      ...(patch.guardBypass ?? []),
    ]),
    direct_response: {
      status: 400,
      body: {
        inline_string: JSON.stringify({
          code: "missing_header",
          message: `the ${h} header is required`,
          header: h,
        }),
      },
    },
    response_headers_to_add: jsonHeader,
  }));
}

/** Answers 405 with Allow for a path served only for some methods; placed after that path's last route. */
export function methodGuard(r: Route, methods: string[]): object {
  const { methods: _omit, ...match } = r.match;
  return {
    name: `${r.name}/method-not-allowed`,
    match: routeMatch(match),
    direct_response: {
      status: 405,
      body: {
        inline_string: JSON.stringify({
          code: "method_not_allowed",
          message: `use ${methods.join(", ")}`,
          allow: methods,
        }),
      },
    },
    response_headers_to_add: [
      ...jsonHeader,
      { header: { key: "allow", value: methods.join(", ") }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" },
    ],
  };
}
