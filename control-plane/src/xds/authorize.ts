import { describeIdentity, type PolicyRole, type WorkloadIdentity } from "@portico/common";
import { POLICY_GROUP } from "@portico/contract";
import { isEnvoyType, isKnownType, policyReader, pushOrder, shortType } from "./types.js";

/** Why a stream was refused; the label of `portico_xds_refused_streams_total`. */
export type RefusalReason =
  /** The certificate names no Portico workload identity, or more than one. */
  | "no_identity"
  /** The control plane's own identity: it serves xDS, it never subscribes. */
  | "not_a_client"
  /** `node.cluster` is not the group the identity may read. */
  | "group"
  /** A resource type outside what the identity may read. */
  | "type";

export const REFUSAL_REASONS: readonly RefusalReason[] = ["no_identity", "not_a_client", "group", "type"];

export interface Refusal {
  reason: RefusalReason;
  /** Names the identity and what it asked for: sent to the client and logged. */
  message: string;
}

/** What a stream asks for: its node's group and, once it names one, a resource type. */
export interface XdsAsk {
  cluster: string;
  typeUrl?: string;
}

const IDENTITY_FORMS = "spiffe://portico/gateway/<group> or spiffe://portico/policy/<role>";

/** The registered types the policy service of `role` may read, in push order. */
export function policyTypes(role: PolicyRole): string[] {
  return pushOrder().filter((t) => policyReader(t) === role);
}

/**
 * Whether a client whose certificate names `identity` may have what it asks for. A gateway reads
 * Envoy's types (listeners, routes, filter configs by ECDS, clusters, endpoints, secrets) of its
 * own group's snapshot; a policy service reads its role's policy types of the policy group and
 * never a secret. Anything else, and a certificate naming no identity, is refused before the
 * stream is served at all.
 */
export function authorizeXds(identity: WorkloadIdentity | undefined, ask: XdsAsk): Refusal | undefined {
  const asked = describeAsk(ask);
  if (!identity) {
    return {
      reason: "no_identity",
      message: `the client certificate names no Portico workload identity (it needs exactly one URI SAN, ${IDENTITY_FORMS}); it asked for ${asked}`,
    };
  }
  const who = describeIdentity(identity);
  if (identity.kind === "control-plane") {
    return {
      reason: "not_a_client",
      message: `the ${who} identity serves xDS and is not a client identity; it asked for ${asked}`,
    };
  }
  const group = identity.kind === "gateway" ? identity.group : POLICY_GROUP;
  if (ask.cluster !== group) {
    return {
      reason: "group",
      message: `${who} may subscribe only as node.cluster '${group}', not '${clip(ask.cluster)}'`,
    };
  }
  if (ask.typeUrl === undefined) return undefined;
  if (identity.kind === "gateway") {
    if (isEnvoyType(ask.typeUrl)) return undefined;
    return {
      reason: "type",
      message: `${who} may not read ${typeName(ask.typeUrl)}: a gateway reads only listeners, routes, filter configs, clusters, endpoints and secrets of its group`,
    };
  }
  if (policyReader(ask.typeUrl) === identity.role) return undefined;
  const own = policyTypes(identity.role).map(shortType);
  return {
    reason: "type",
    message: `${who} may not read ${typeName(ask.typeUrl)}: it reads only ${own.length > 0 ? own.join(", ") : "its own policy types"}`,
  };
}

function describeAsk(ask: XdsAsk): string {
  return `node.cluster '${clip(ask.cluster)}'${ask.typeUrl ? `, ${typeName(ask.typeUrl)}` : ""}`;
}

/** The short name where the type is one this control plane serves, else the URL as given. */
function typeName(typeUrl: string): string {
  return isKnownType(typeUrl) ? `${shortType(typeUrl)} (${typeUrl})` : clip(typeUrl);
}

/** What the client sent, cut short: a refusal must not echo (or log) megabytes it chose. */
function clip(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
