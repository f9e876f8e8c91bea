import type { HttpFeature } from "../feature.js";
import { authentication } from "./authentication.js";
import { composite } from "./composite.js";
import { cors } from "./cors.js";
import { errorAnswers } from "./error-answers.js";
import { fallback } from "./fallback.js";
import { internalHeaders } from "./internal-headers.js";
import { observability } from "./observability.js";
import { quota } from "./quota.js";
import { rateLimits } from "./rate-limits.js";
import { requestIds } from "./request-ids.js";
import { requestLimits } from "./request-limits.js";
import { retries } from "./retries.js";
import { transcoding } from "./transcoding.js";

/**
 * Every HTTP feature the translator asks, in registry order (see HttpFeature): a route's
 * `typed_per_filter_config` lists authentication, rate limits, transcoding, CORS, fallback and
 * body limits in this order, and its action has retries before rate limits (a failover's retry
 * policy, from fallback, replaces the route's own).
 */
export const HTTP_FEATURES: readonly HttpFeature[] = [
  retries,
  authentication,
  rateLimits,
  transcoding,
  cors,
  fallback,
  requestLimits,
  observability,
  quota,
  requestIds,
  errorAnswers,
  internalHeaders,
  composite,
];
