import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sha256Hex } from "../src/apikey/verify.js";
import { compilePolicy } from "../src/policy/compile.js";
import { loadPolicyFile, parsePolicy } from "../src/policy/load.js";
import { ecKey, hmacKey, ISSUER, rsaKey } from "@portico/testing";

const rsa = rsaKey("k1");

function problems(doc: unknown): string[] {
  const r = compilePolicy(doc);
  if (r.ok) return [];
  return r.error.details.map((d) => `${d.field}: ${d.reason}`);
}

describe("policy schema and compilation", () => {
  it("compiles a full policy with precomputed lookups", () => {
    const r = compilePolicy({
      jwtProviders: [
        { name: "idp", issuer: ISSUER, audiences: ["api"], jwks: { keys: [rsa.jwk] }, algorithms: ["RS256"] },
      ],
      consumers: [{ name: "acme", plan: "gold", scopes: ["orders:read"] }],
      apiKeys: [{ name: "acme-1", consumer: "acme", sha256: sha256Hex("secret-key").toUpperCase() }],
      authPolicies: [
        {
          name: "orders",
          accept: ["jwt", "apiKey"],
          requiredScopes: "orders:read orders:write",
          scopesMode: "any",
        },
      ],
    });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const p = r.value;
    expect(p.revision).toMatch(/^[0-9a-f]{16}$/);
    // Upper-case hex in the file is normalised so lookups by the lower-case digest find it.
    expect(p.apiKeys.get(sha256Hex("secret-key"))?.identity).toMatchObject({
      consumer: "acme",
      plan: "gold",
      keyId: "acme-1",
    });
    const orders = p.authPolicies.get("orders")!;
    expect(orders.accept).toEqual([
      { kind: "jwt", name: "idp" },
      { kind: "apiKey", name: "apiKey" },
    ]);
    expect(orders.requiredScopes).toEqual(["orders:read", "orders:write"]);
    expect(orders.scopesMode).toBe("any");
    expect(orders.stripCredentials).toBe(true);
    // Without a default policy, unannotated routes accept every provider and no anonymous caller.
    expect(p.defaultPolicy.accept.map((a) => a.name)).toEqual(["idp", "apiKey"]);
    expect(p.defaultPolicy.allowAnonymous).toBe(false);
  });

  it("gives the same revision for the same document and a different one after a change", () => {
    const doc = { consumers: [{ name: "a" }] };
    const a = compilePolicy(doc);
    const b = compilePolicy(structuredClone(doc));
    const c = compilePolicy({ consumers: [{ name: "a", plan: "gold" }] });
    expect(a.ok && b.ok && c.ok).toBe(true);
    if (a.ok && b.ok && c.ok) {
      expect(a.value.revision).toBe(b.value.revision);
      expect(a.value.revision).not.toBe(c.value.revision);
    }
  });

  it("refuses HMAC secrets shorter than 256 bits", () => {
    const short = hmacKey("h", 31);
    expect(
      problems({
        jwtProviders: [
          {
            name: "h",
            issuer: ISSUER,
            audiences: ["api"],
            jwks: { keys: [short.jwk] },
            algorithms: ["HS256"],
          },
        ],
      }),
    ).toEqual(["jwtProviders[0].jwks.keys[0]: HMAC secret is 248 bits; at least 256 are required"]);
  });

  it("refuses a 32-byte secret pinned only to HS512 (RFC 7518 §3.2 wants the hash size)", () => {
    const k = hmacKey("h", 32);
    expect(
      problems({
        jwtProviders: [
          { name: "h", issuer: ISSUER, audiences: ["api"], jwks: { keys: [k.jwk] }, algorithms: ["HS512"] },
        ],
      }),
    ).toEqual(["jwtProviders[0].jwks: no key can verify any of the pinned algorithms (HS512)"]);
  });

  it("refuses HMAC with a JWKS URI, private keys, short RSA keys and keys for other uses", () => {
    expect(
      problems({
        jwtProviders: [
          {
            name: "h",
            issuer: ISSUER,
            audiences: ["api"],
            jwksUri: "https://idp.test/jwks",
            algorithms: ["HS256"],
          },
        ],
      }),
    ).toEqual([
      "jwtProviders[0].algorithms: HMAC algorithms need the secret inline in jwks; a published JWKS cannot hold a shared secret",
    ]);
    const ec = ecKey("e");
    const priv = {
      ...(ec.privateKey as import("node:crypto").KeyObject).export({ format: "jwk" }),
      kid: "e",
    };
    expect(
      problems({
        jwtProviders: [
          { name: "e", issuer: ISSUER, audiences: ["api"], jwks: { keys: [priv] }, algorithms: ["ES256"] },
        ],
      }),
    ).toEqual(["jwtProviders[0].jwks.keys[0]: contains private key material; publish only the public key"]);
    const small = rsaKey("s", "RS256", 1024);
    expect(
      problems({
        jwtProviders: [
          {
            name: "s",
            issuer: ISSUER,
            audiences: ["api"],
            jwks: { keys: [small.jwk] },
            algorithms: ["RS256"],
          },
        ],
      }),
    ).toEqual(["jwtProviders[0].jwks.keys[0]: RSA modulus is 1024 bits; at least 2048 are required"]);
    expect(
      problems({
        jwtProviders: [
          {
            name: "x",
            issuer: ISSUER,
            audiences: ["api"],
            jwks: { keys: [{ ...rsa.jwk, use: "enc" }] },
            algorithms: ["RS256"],
          },
        ],
      }),
    ).toEqual(['jwtProviders[0].jwks.keys[0]: use is "enc", not "sig"']);
  });

  it("requires exactly one key source and pinned algorithms", () => {
    expect(
      problems({ jwtProviders: [{ name: "x", issuer: ISSUER, audiences: ["api"], algorithms: ["RS256"] }] }),
    ).toEqual(["jwtProviders[0]: give exactly one of jwksUri or jwks"]);
    expect(
      problems({
        jwtProviders: [{ name: "x", issuer: ISSUER, audiences: ["api"], jwks: { keys: [rsa.jwk] } }],
      })[0],
    ).toMatch(/^jwtProviders\[0\]\.algorithms: /);
    expect(
      problems({
        jwtProviders: [
          { name: "x", issuer: ISSUER, audiences: ["api"], jwks: { keys: [rsa.jwk] }, algorithms: ["none"] },
        ],
      })[0],
    ).toMatch(/^jwtProviders\[0\]\.algorithms\[0\]: /);
  });

  it("checks references and uniqueness", () => {
    const hash = sha256Hex("k");
    expect(
      problems({
        jwtProviders: [
          {
            name: "jwt",
            issuer: ISSUER,
            audiences: ["api"],
            jwks: { keys: [rsa.jwk] },
            algorithms: ["RS256"],
          },
          {
            name: "idp",
            issuer: ISSUER,
            audiences: ["api"],
            jwks: { keys: [rsa.jwk] },
            algorithms: ["RS256"],
          },
          {
            name: "idp",
            issuer: "other",
            audiences: ["api"],
            jwks: { keys: [rsa.jwk] },
            algorithms: ["RS256"],
          },
        ],
        consumers: [{ name: "acme" }],
        apiKeys: [
          { name: "k1", consumer: "nobody", sha256: hash },
          { name: "k2", consumer: "acme", sha256: hash },
        ],
        authPolicies: [{ name: "p", accept: ["ghost"] }],
        settings: { defaultPolicy: "missing" },
      }),
    ).toEqual([
      "jwtProviders[0].name: jwt is a credential kind; give the provider another name",
      "jwtProviders[2].name: duplicate provider name idp",
      "apiKeys[1]: duplicate API key hash " + hash,
      "apiKeys[0].consumer: no consumer named nobody",
      "authPolicies[0].accept: no provider named ghost",
    ]);
  });

  it("names unknown fields instead of ignoring them", () => {
    expect(problems({ consumers: [{ name: "a", plann: "gold" }] })).toEqual([
      "consumers[0].plann: unknown field (plann)",
    ]);
    expect(problems({ authPolicies: [{ name: "p", accept: ["oauth"] }] })).toEqual([
      "authPolicies[0].accept: accepts oauth, but no oauth provider is configured",
    ]);
  });

  it("needs an OAuth client secret, inline or from the environment", () => {
    expect(
      problems({
        oauthProviders: [{ name: "as", introspectionUrl: "https://as.test/introspect", clientId: "portico" }],
      }),
    ).toEqual(["oauthProviders[0]: give exactly one of clientSecret or clientSecretEnv"]);
  });

  describe("files", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "portico-authz-policy-"));
    afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

    it("loads a YAML policy file", async () => {
      const file = path.join(dir, "policy.yaml");
      fs.writeFileSync(
        file,
        [
          "jwtProviders:",
          "  - name: idp",
          `    issuer: ${ISSUER}`,
          "    jwksUri: https://idp.test/.well-known/jwks.json",
          "    algorithms: [RS256, ES256]",
          "    audiences: [portico-api]",
          "    from:",
          "      - header: Authorization",
          '        prefix: "Bearer "',
          "      - cookie: session",
          "consumers:",
          "  - name: acme",
          "    plan: gold",
          "apiKeys:",
          "  - name: acme-1",
          "    consumer: acme",
          `    sha256: ${sha256Hex("k")}`,
          "    expiresAt: 2030-01-01T00:00:00Z",
          "authPolicies:",
          "  - name: public",
          "    accept: [jwt, apiKey]",
          "    allowAnonymous: true",
          "settings:",
          "  defaultPolicy: public",
          "",
        ].join("\n"),
      );
      const r = await loadPolicyFile(file);
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      const idp = r.value.jwtProviders.get("idp")!;
      expect(idp.from).toEqual([{ header: "authorization", prefix: "Bearer " }, { cookie: "session" }]);
      expect(idp.clockSkewSeconds).toBe(60);
      expect(idp.jwksRefetchCooldownSeconds).toBe(30);
      expect(r.value.defaultPolicy.name).toBe("public");
      expect(r.value.apiKeys.get(sha256Hex("k"))?.expiresAtMs).toBe(Date.UTC(2030, 0, 1));
    });

    it("accepts the example policy the README points to", async () => {
      const r = await loadPolicyFile(path.join(import.meta.dirname, "..", "examples", "policy.yaml"));
      expect(r.ok ? "ok" : r.error.details).toBe("ok");
      if (!r.ok) return;
      expect([...r.value.authPolicies.keys()]).toEqual(["orders-read", "orders-admin", "partners", "public"]);
      expect(r.value.apiKeys.get(sha256Hex("demo-acme-key-0001"))?.name).toBe("acme-primary");
    });

    it("reports unreadable files and bad YAML as errors, not exceptions", async () => {
      const missing = await loadPolicyFile(path.join(dir, "nope.yaml"));
      expect(missing.ok).toBe(false);
      if (!missing.ok) expect(missing.error.code).toBe("unreadable_policy");
      const bad = parsePolicy("consumers: [ {name: a");
      expect(bad.ok).toBe(false);
      if (!bad.ok) expect(bad.error.message).toMatch(/not valid YAML/);
      const empty = parsePolicy("");
      expect(empty.ok).toBe(true);
    });
  });
});
