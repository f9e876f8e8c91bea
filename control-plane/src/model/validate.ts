import { isIP } from "node:net";
import { isLoopbackHost } from "@portico/contract";
import { RE2JS } from "re2js";
import { parseDocument } from "yaml";
import { authPolicyProblems } from "./auth-document.js";
import { nativeModeProblem } from "./auth-path.js";
import { compositeReferences, compositeRouteProblems } from "./composite.js";
import { ConfigError, fromZod, type FieldProblem } from "./errors.js";
import { grpcTranscodeProblems } from "./grpc-transcode.js";
import { rateLimitPolicyProblems } from "./ratelimit.js";
import { enforcementProblems, hasServiceLimits } from "./ratelimit-enforcement.js";
import { shadows } from "./route-order.js";
import { ConfigSchema, KIND_NAMES, type Config, type Kind, type Listener } from "./schema.js";

/** Parses YAML (or JSON, which is YAML) text into a plain value, or throws a ConfigError naming the line. */
export function parseYamlText(text: string, source = "config"): unknown {
  // JSON is YAML; JSON.parse reads a large generated config ~50x faster than the YAML parser.
  if (/^\s*\{/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON after all: the YAML parser says where.
    }
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      "invalid_yaml",
      `${source} is not valid YAML`,
      doc.errors.map((e) => ({
        field: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : "(document)",
        reason: e.message.split("\n")[0]!,
      })),
    );
  }
  return doc.toJS() ?? {};
}

/** Parses YAML (or JSON) text into a validated config, or throws a ConfigError. */
export function parseConfigText(text: string, source = "config"): Config {
  return validateConfig(parseYamlText(text, source));
}

export interface ValidateOptions {
  /**
   * Skip the checks that stand in for Envoy's own (RE2 regexes, listener ports) and ext-authz's
   * (its policy compiler), so that a config only they refuse can reach them: for exercising NACK
   * handling. References are always checked.
   */
  skipSemanticChecks?: boolean;
}

/** Checks shape and meaning: every problem is reported at once, each with its field. */
export function validateConfig(input: unknown, opts: ValidateOptions = {}): Config {
  const parsed = ConfigSchema.safeParse(input);
  if (!parsed.success) throw fromZod(parsed.error);
  const config = parsed.data;
  const problems = semanticProblems(config, !opts.skipSemanticChecks);
  if (problems.length > 0)
    throw new ConfigError("invalid_config", "the configuration is not valid", problems);
  return config;
}

/** A reference from one resource to another, with the field that makes it. */
export interface Reference {
  from: { kind: Kind; name: string; field: string };
  to: { kind: Kind; name: string };
}

/** Every reference in the config; used for integrity checks and to refuse deleting what is in use. */
export function references(config: Config): Reference[] {
  const out: Reference[] = [];
  const ref = (
    kind: Kind,
    i: number,
    name: string,
    field: string,
    toKind: Kind,
    toName: string | undefined,
  ) => {
    if (toName !== undefined)
      out.push({ from: { kind, name, field: `${kind}[${i}].${field}` }, to: { kind: toKind, name: toName } });
  };
  config.gateways.forEach((g, gi) =>
    g.listeners.forEach((l, li) => {
      ref("gateways", gi, g.name, `listeners[${li}].certificate`, "certificates", l.certificate);
      if (li === 0) {
        ref("gateways", gi, g.name, "extAuthz.upstream", "upstreams", g.extAuthz?.upstream);
        ref("gateways", gi, g.name, "rateLimit.upstream", "upstreams", g.rateLimit?.upstream);
        ref("gateways", gi, g.name, "tracing.upstream", "upstreams", g.tracing?.upstream);
      }
      l.sniCertificates?.forEach((sni, si) =>
        ref(
          "gateways",
          gi,
          g.name,
          `listeners[${li}].sniCertificates[${si}].certificate`,
          "certificates",
          sni.certificate,
        ),
      );
    }),
  );
  config.upstreams.forEach((u, i) => {
    ref("upstreams", i, u.name, "tls.ca", "certificates", u.tls?.ca);
    ref("upstreams", i, u.name, "tls.clientCertificate", "certificates", u.tls?.clientCertificate);
  });
  config.routes.forEach((r, i) => {
    ref("routes", i, r.name, "gateway", "gateways", r.gateway);
    ref("routes", i, r.name, "upstream", "upstreams", r.upstream);
    r.upstreams?.forEach((w, wi) => ref("routes", i, r.name, `upstreams[${wi}].name`, "upstreams", w.name));
    ref("routes", i, r.name, "authPolicy", "authPolicies", r.authPolicy);
    ref("routes", i, r.name, "rateLimitPolicy", "rateLimitPolicies", r.rateLimitPolicy);
    ref("routes", i, r.name, "fallback.upstream", "upstreams", r.fallback?.upstream);
    ref("routes", i, r.name, "grpcTranscode.descriptors", "protoDescriptors", r.grpcTranscode?.descriptors);
  });
  out.push(...compositeReferences(config));
  config.apiKeys.forEach((k, i) => ref("apiKeys", i, k.name, "consumer", "consumers", k.consumer));
  config.authPolicies.forEach((p, i) =>
    p.consumers?.forEach((c, ci) => ref("authPolicies", i, p.name, `consumers[${ci}]`, "consumers", c)),
  );
  // An `accept` entry that is not a credential kind names a provider of either kind.
  const oauth = new Set(config.oauthProviders.map((p) => p.name));
  config.authPolicies.forEach((p, i) =>
    p.accept.forEach((a, ai) => {
      if (CREDENTIAL_KINDS.has(a)) return;
      ref("authPolicies", i, p.name, `accept[${ai}]`, oauth.has(a) ? "oauthProviders" : "jwtProviders", a);
    }),
  );
  return out;
}

const CREDENTIAL_KINDS: ReadonlySet<string> = new Set(["jwt", "apiKey", "oauth"]);
const ACCEPT_FIELD = /^authPolicies\[\d+\]\.accept\[\d+\]$/;

const SINGULAR: Record<Kind, string> = {
  gateways: "gateway",
  upstreams: "upstream",
  routes: "route",
  compositeRoutes: "composite route",
  jwtProviders: "JWT provider",
  oauthProviders: "OAuth provider",
  consumers: "consumer",
  apiKeys: "API key",
  authPolicies: "auth policy",
  rateLimitPolicies: "rate-limit policy",
  certificates: "certificate",
  protoDescriptors: "proto descriptors",
};

export function singular(kind: Kind): string {
  return SINGULAR[kind];
}

/** Envoy compiles every regex with RE2: no look-arounds, no back-references. */
export function re2Problem(pattern: string): string | undefined {
  try {
    RE2JS.compile(pattern);
    return undefined;
  } catch (err) {
    return `not a valid RE2 regular expression (${(err as Error).message})`;
  }
}

function duplicates(items: { name: string }[], where: string, what: string): FieldProblem[] {
  const seen = new Map<string, number>();
  const out: FieldProblem[] = [];
  items.forEach((item, i) => {
    const first = seen.get(item.name);
    if (first !== undefined) {
      out.push({
        field: `${where}[${i}].name`,
        reason: `${what} '${item.name}' is already defined at ${where}[${first}]`,
      });
    } else seen.set(item.name, i);
  });
  return out;
}

function semanticProblems(config: Config, envoyChecks: boolean): FieldProblem[] {
  const problems: FieldProblem[] = [];
  for (const kind of KIND_NAMES) problems.push(...duplicates(config[kind], kind, singular(kind)));

  const names = new Map<Kind, Set<string>>(KIND_NAMES.map((k) => [k, new Set(config[k].map((x) => x.name))]));
  for (const r of references(config)) {
    if (!names.get(r.to.kind)!.has(r.to.name)) {
      const what = ACCEPT_FIELD.test(r.from.field) ? "JWT or OAuth provider" : singular(r.to.kind);
      problems.push({ field: r.from.field, reason: `no ${what} named '${r.to.name}'` });
    }
  }
  problems.push(...providerProblems(config));
  problems.push(...rateLimitPolicyProblems(config, envoyChecks));
  problems.push(...enforcementProblems(config));
  problems.push(...grpcTranscodeProblems(config));
  problems.push(...compositeRouteProblems(config, envoyChecks));
  // A route no request can reach is a mistake, whatever else is right.
  if (envoyChecks) {
    for (const s of shadows(config)) {
      if (s.full) problems.push({ field: `${s.shadowed.kind}[${s.shadowed.index}].match`, reason: s.reason });
    }
  }

  const certs = new Map(config.certificates.map((c) => [c.name, c]));
  config.gateways.forEach((g, gi) => {
    problems.push(...duplicates(g.listeners, `gateways[${gi}].listeners`, "listener"));
    const ports = new Map<number, number>();
    g.listeners.forEach((l, li) => {
      const at = `gateways[${gi}].listeners[${li}]`;
      const other = ports.get(l.port);
      if (other !== undefined && envoyChecks) {
        problems.push({
          field: `${at}.port`,
          reason: `port ${l.port} is already used by listener '${g.listeners[other]!.name}' of this gateway`,
        });
      } else ports.set(l.port, li);
      if (l.protocol === "https") {
        const cert = l.certificate ? certs.get(l.certificate) : undefined;
        if (!l.certificate && !l.gatewayIdentity)
          problems.push({
            field: `${at}.certificate`,
            reason: "an https listener needs a certificate, or gatewayIdentity",
          });
        else if (cert && (!cert.certificatePem || !cert.privateKeyPem)) {
          problems.push({
            field: `${at}.certificate`,
            reason: `certificate '${l.certificate}' has no certificatePem and privateKeyPem`,
          });
        }
        l.sniCertificates?.forEach((sni, si) => {
          const c = certs.get(sni.certificate);
          if (c && (!c.certificatePem || !c.privateKeyPem)) {
            problems.push({
              field: `${at}.sniCertificates[${si}].certificate`,
              reason: `certificate '${sni.certificate}' has no certificatePem and privateKeyPem`,
            });
          }
        });
      } else if (l.certificate || l.sniCertificates) {
        problems.push({ field: `${at}.certificate`, reason: "only https listeners take certificates" });
      }
      problems.push(...listenerTrustProblems(l, at));
    });
  });

  const upstreamsByName = new Map(config.upstreams.map((u) => [u.name, u]));
  config.gateways.forEach((g, gi) => {
    for (const [field, name] of [
      ["extAuthz", g.extAuthz?.upstream],
      ["rateLimit", g.rateLimit?.upstream],
      ["tracing", g.tracing?.upstream],
    ] as const) {
      const u = name === undefined ? undefined : upstreamsByName.get(name);
      if (u && u.protocol !== "grpc") {
        problems.push({
          field: `gateways[${gi}].${field}.upstream`,
          reason: `upstream '${u.name}' must have protocol grpc`,
        });
      }
    }
  });
  const gateways = new Map(config.gateways.map((g) => [g.name, g]));
  config.routes.forEach((r, ri) => {
    const at = `routes[${ri}]`;
    const g = gateways.get(r.gateway);
    if (g && r.listener && !g.listeners.some((l) => l.name === r.listener)) {
      problems.push({
        field: `${at}.listener`,
        reason: `gateway '${r.gateway}' has no listener named '${r.listener}'`,
      });
    }
    const regexes: [string, string | undefined][] = [
      [`${at}.match.pathRegex`, r.match.pathRegex],
      [`${at}.rewrite.regex.pattern`, r.rewrite?.regex?.pattern],
      ...(r.match.headers ?? []).map((h, i): [string, string | undefined] => [
        `${at}.match.headers[${i}].regex`,
        h.regex,
      ]),
      ...(r.match.query ?? []).map((h, i): [string, string | undefined] => [
        `${at}.match.query[${i}].regex`,
        h.regex,
      ]),
    ];
    for (const [field, pattern] of regexes) {
      const problem = pattern === undefined || !envoyChecks ? undefined : re2Problem(pattern);
      if (problem) problems.push({ field, reason: problem });
    }
    if (r.rewrite?.prefix !== undefined && r.rewrite.regex !== undefined) {
      problems.push({ field: `${at}.rewrite`, reason: "give prefix or regex, not both" });
    }
    if (r.rewrite?.prefix !== undefined && r.match.pathPrefix === undefined) {
      problems.push({ field: `${at}.rewrite.prefix`, reason: "a prefix rewrite needs a pathPrefix match" });
    }
    if ((r.redirect || r.directResponse) && (r.rewrite || r.retries || r.timeoutMs !== undefined)) {
      problems.push({
        field: at,
        reason: "rewrite, retries and timeoutMs apply only to routes with upstreams",
      });
    }
    if (r.redirect && r.redirect.path !== undefined && r.redirect.prefix !== undefined) {
      problems.push({ field: `${at}.redirect`, reason: "give path or prefix, not both" });
    }
    if (r.fallback?.upstream !== undefined && r.upstream === undefined) {
      problems.push({
        field: `${at}.fallback.upstream`,
        reason: "a fallback upstream needs the route to have one upstream",
      });
    }
    if (r.fallback?.upstream !== undefined && r.fallback.upstream === r.upstream) {
      problems.push({ field: `${at}.fallback.upstream`, reason: "the fallback must be another upstream" });
    }
    if (r.fallback && (r.redirect || r.directResponse)) {
      problems.push({ field: `${at}.fallback`, reason: "a fallback applies only to routes with upstreams" });
    }
    if (g && r.authPolicy !== undefined && !g.extAuthz) {
      problems.push({
        field: `${at}.authPolicy`,
        reason: `gateway '${r.gateway}' has no extAuthz service to enforce it; set gateways.extAuthz`,
      });
    }
    const native = g && nativeModeProblem(config, g, r.authPolicy);
    if (native) problems.push({ field: `${at}.authPolicy`, reason: native });
    // A policy with only a local limit, or limits each Envoy counts, is enforced by Envoy alone.
    const rlp = config.rateLimitPolicies.find((p) => p.name === r.rateLimitPolicy);
    if (g && rlp && hasServiceLimits(rlp) && !g.rateLimit) {
      problems.push({
        field: `${at}.rateLimitPolicy`,
        reason: `gateway '${r.gateway}' has no rateLimit service to enforce it; set gateways.rateLimit`,
      });
    }
    if (r.retries?.on.includes("retriable-status-codes") && !r.retries.statusCodes?.length) {
      problems.push({
        field: `${at}.retries.statusCodes`,
        reason: "retriable-status-codes needs statusCodes",
      });
    }
  });
  config.upstreams.forEach((u, ui) => {
    if (u.tls?.gatewayIdentity) {
      if (u.tls.ca)
        problems.push({
          field: `upstreams[${ui}].tls.ca`,
          reason:
            "gatewayIdentity verifies the upstream with the internal CA: give ca or gatewayIdentity, not both",
        });
      if (u.tls.clientCertificate)
        problems.push({
          field: `upstreams[${ui}].tls.clientCertificate`,
          reason:
            "gatewayIdentity presents the gateway's own certificate: give clientCertificate or gatewayIdentity, not both",
        });
    }
    const ca = u.tls?.ca ? certs.get(u.tls.ca) : undefined;
    if (ca && !ca.caPem)
      problems.push({ field: `upstreams[${ui}].tls.ca`, reason: `certificate '${ca.name}' has no caPem` });
    const client = u.tls?.clientCertificate ? certs.get(u.tls.clientCertificate) : undefined;
    if (client && (!client.certificatePem || !client.privateKeyPem)) {
      problems.push({
        field: `upstreams[${ui}].tls.clientCertificate`,
        reason: `certificate '${client.name}' has no certificatePem and privateKeyPem`,
      });
    }
  });
  // Only a config that is otherwise valid is worth compiling, and its problems are not repeated.
  if (envoyChecks && problems.length === 0) problems.push(...authPolicyProblems(config));
  return problems;
}

/** Whether a listener address (an IP, as Envoy binds it) takes connections from this host alone. */
function isLoopback(address: string): boolean {
  return isIP(address) !== 0 && isLoopbackHost(address);
}

/**
 * Identity headers are believed only from callers the listener can vouch for: gateways proven by
 * mTLS, or processes on the same host. A `gatewayIdentity` listener's TLS is the Envoy's own.
 */
function listenerTrustProblems(l: Listener, at: string): FieldProblem[] {
  const problems: FieldProblem[] = [];
  if (l.gatewayIdentity) {
    if (l.protocol !== "https")
      problems.push({
        field: `${at}.protocol`,
        reason: "a gatewayIdentity listener serves mTLS: set protocol https",
      });
    if (l.certificate)
      problems.push({
        field: `${at}.certificate`,
        reason:
          "gatewayIdentity presents the Envoy's own gateway certificate: give certificate or gatewayIdentity, not both",
      });
    if (l.sniCertificates)
      problems.push({
        field: `${at}.sniCertificates`,
        reason: "a gatewayIdentity listener has one certificate, the Envoy's own: remove sniCertificates",
      });
  }
  if (l.trustIdentityHeaders && !l.gatewayIdentity && !isLoopback(l.address)) {
    problems.push({
      field: `${at}.trustIdentityHeaders`,
      reason:
        `anything that reaches ${l.address}:${l.port} could send identity headers and pass as any consumer: ` +
        "set gatewayIdentity (mTLS, gateways only) or bind the listener to 127.0.0.1 or ::1",
    });
  }
  return problems;
}

/** Something a valid config does that its author may not expect, about the resources it names. */
export interface ConfigWarning extends FieldProblem {
  about: { kind: Kind; name: string }[];
}

/**
 * What a write is answered with beside its result: routes that another route takes some requests
 * from (on one listener or host only, or for requests that match both when only the order of
 * creation decides).
 */
export function configWarnings(config: Config): ConfigWarning[] {
  return shadows(config)
    .filter((s) => !s.full)
    .map((s) => ({
      field: `${s.shadowed.kind}[${s.shadowed.index}].match`,
      reason: s.reason,
      about: [s.shadowed, s.by].map((r) => ({ kind: r.kind, name: r.name })),
    }));
}

/** Provider names are what `accept` lists name, so they must say which provider they mean. */
function providerProblems(config: Config): FieldProblem[] {
  const problems: FieldProblem[] = [];
  const jwt = new Set(config.jwtProviders.map((p) => p.name));
  const named = [
    ...config.jwtProviders.map((p, i) => ({ name: p.name, field: `jwtProviders[${i}].name` })),
    ...config.oauthProviders.map((p, i) => ({ name: p.name, field: `oauthProviders[${i}].name` })),
  ];
  for (const { name, field } of named) {
    if (CREDENTIAL_KINDS.has(name)) {
      problems.push({
        field,
        reason: `'${name}' is a credential kind in accept lists; name the provider otherwise`,
      });
    } else if (field.startsWith("oauth") && jwt.has(name)) {
      problems.push({ field, reason: `a JWT provider is already named '${name}'` });
    }
  }
  config.oauthProviders.forEach((p, i) => {
    // The admin API shows what it stores, and the policy goes over xDS: a secret stays out of both.
    if (p.clientSecret !== undefined) {
      problems.push({
        field: `oauthProviders[${i}].clientSecret`,
        reason:
          "give clientSecretEnv instead: the name of ext-authz's environment variable holding the secret",
      });
    }
  });
  return problems;
}
