import { describe, expect, it } from "vitest";
import { ecKey, rsaKey } from "@portico/testing";
import { openApiDocument } from "../src/admin/openapi.js";
import { ConfigError } from "../src/model/errors.js";
import type { ConfigInput } from "../src/model/schema.js";
import { references, validateConfig } from "../src/model/validate.js";

function problems(config: ConfigInput, opts: { skipSemanticChecks?: boolean } = {}) {
  try {
    validateConfig(config, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).details;
  }
  throw new Error("expected the config to be refused");
}

const idp = {
  name: "idp",
  issuer: "https://idp.test",
  audiences: ["api"],
  jwks: { keys: [ecKey("k1").jwk] },
  algorithms: ["ES256" as const],
};
const as = {
  name: "partner-as",
  introspectionUrl: "https://as.test/introspect",
  clientId: "portico",
  clientSecretEnv: "PORTICO_SECRET_PARTNER_AS",
};

describe("JWT and OAuth providers in the model", () => {
  it("accept lists name providers of either kind; an unknown name is refused with its field", () => {
    const config = validateConfig({
      jwtProviders: [idp],
      oauthProviders: [as],
      authPolicies: [{ name: "p", accept: ["idp", "partner-as", "apiKey"] }],
    });
    expect(references(config).map((r) => `${r.from.field} -> ${r.to.kind}/${r.to.name}`)).toEqual([
      "authPolicies[0].accept[0] -> jwtProviders/idp",
      "authPolicies[0].accept[1] -> oauthProviders/partner-as",
    ]);
    expect(problems({ jwtProviders: [idp], authPolicies: [{ name: "p", accept: ["jwt", "nope"] }] })).toEqual(
      [{ field: "authPolicies[0].accept[1]", reason: "no JWT or OAuth provider named 'nope'" }],
    );
  });

  it("refuses an inline OAuth client secret, kind names as provider names, and one name for two providers", () => {
    const { clientSecretEnv: _env, ...inline } = as;
    expect(
      problems({
        jwtProviders: [{ ...idp, name: "jwt" }, idp],
        oauthProviders: [{ ...inline, name: "idp", clientSecret: "s3cret" }],
      }),
    ).toEqual([
      {
        field: "jwtProviders[0].name",
        reason: "'jwt' is a credential kind in accept lists; name the provider otherwise",
      },
      { field: "oauthProviders[0].name", reason: "a JWT provider is already named 'idp'" },
      {
        field: "oauthProviders[0].clientSecret",
        reason:
          "give clientSecretEnv instead: the name of ext-authz's environment variable holding the secret",
      },
    ]);
  });

  it("refuses what ext-authz's compiler would refuse, unless its checks are skipped (to reach a NACK)", () => {
    const mismatched: ConfigInput = {
      jwtProviders: [{ ...idp, jwks: { keys: [rsaKey("r1").jwk] } }],
      authPolicies: [{ name: "p", accept: ["oauth"] }],
    };
    expect(problems(mismatched)).toEqual([
      { field: "jwtProviders[0].jwks", reason: "no key can verify any of the pinned algorithms (ES256)" },
      { field: "authPolicies[0].accept", reason: "accepts oauth, but no oauth provider is configured" },
    ]);
    expect(validateConfig(mismatched, { skipSemanticChecks: true }).jwtProviders).toHaveLength(1);
  });

  it("the provider schemas are ext-authz's own, and the OpenAPI document has both kinds", () => {
    expect(problems({ jwtProviders: [{ ...idp, jwksUri: "https://idp.test/jwks" }] })).toEqual([
      { field: "jwtProviders[0]", reason: "give exactly one of jwksUri or jwks" },
    ]);
    const doc = openApiDocument() as {
      paths: Record<string, unknown>;
      components: { schemas: Record<string, any> };
    };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(["/api/v1/jwtProviders/{name}", "/api/v1/oauthProviders/{name}"]),
    );
    expect(doc.components.schemas.JwtProvider.properties.algorithms).toBeDefined();
    expect(doc.components.schemas.OauthProvider.properties.clientSecretEnv).toBeDefined();
  });
});
