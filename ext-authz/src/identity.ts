import type { CredentialKind } from "@portico/contract";

export type { CredentialKind };

/** An authenticated caller, whatever the credential; what the decision and the headers are built from. */
export interface Identity {
  readonly kind: CredentialKind;
  /** The provider that vouched for the caller (a JWT or OAuth provider name, or `apiKey`). */
  readonly provider: string;
  readonly consumer: string;
  readonly plan: string;
  /** The API key's name, for API-key callers only. */
  readonly keyId?: string;
  readonly scopes: readonly string[];
  /** Token claims (JWT) or the introspection answer (OAuth); empty for API keys. */
  readonly claims: Readonly<Record<string, unknown>>;
}

/** The plan of an authenticated caller whose consumer record and token name none. */
export const DEFAULT_PLAN = "default";
/** Consumer, plan and provider of a caller without credentials, so rate-limit keys always have a value. */
export const ANONYMOUS = "anonymous";
