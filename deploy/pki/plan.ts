// What the PKI init makes, and for whom: a local CA, one certificate per workload (naming its
// identity and the host names peers dial it by), and the Redis login the Redis clients share.
import { isIP } from "node:net";
import { identityUri, POLICY_ROLES, type PolicyRole, type WorkloadIdentity } from "@portico/common";

/** Who owns a workload's files: the user its container runs as. */
export interface Owner {
  uid: number;
  gid: number;
}

export interface WorkloadPlan {
  /** Where its files go: a directory under the output, or a Secret named after it. */
  dir: string;
  identity: WorkloadIdentity;
  /** DNS SANs: the names peers dial it by (a TLS client checks one of them). */
  dns: string[];
  /** IP SANs, for peers that dial it by address. */
  ip: string[];
  owner?: Owner;
  /** Also gets the Redis password: the control plane, the rate limiter and the aggregator do. */
  redisClient: boolean;
}

export interface RedisPlan {
  /** The ACL user the clients log in as; the `default` user is turned off. */
  username: string;
  owner?: Owner;
}

export interface PkiPlan {
  workloads: WorkloadPlan[];
  redis?: RedisPlan;
  /** Lifetime of a workload certificate; one is renewed when a third of it is left. */
  leafDays: number;
  /** Lifetime of the CA. */
  caDays: number;
}

/** The file names inside a workload's directory (and the keys of its Secret). */
export const FILES = {
  cert: "cert.pem",
  key: "key.pem",
  ca: "ca.pem",
  redisPassword: "redis-password",
} as const;
export const CA_DIR = "ca";
export const CA_FILES = { cert: "ca.pem", key: "ca-key.pem" } as const;
export const REDIS_DIR = "redis";
export const REDIS_FILES = { password: "password", acl: "users.acl" } as const;

/** The policy roles that keep state in Redis. */
const REDIS_ROLES: readonly PolicyRole[] = ["ratelimit", "aggregator"];

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

export function checkDnsName(name: string, flag: string): string {
  if (!DNS_NAME.test(name)) throw new Error(`${flag}: '${name}' is not a lower-case DNS name`);
  return name;
}

export function workloadDir(id: WorkloadIdentity): string {
  switch (id.kind) {
    case "control-plane":
      return "control-plane";
    case "policy":
      return id.role;
    case "gateway":
      return `gateway-${id.group}`;
  }
}

/** Host names and addresses, from a flag: each a lower-case DNS name or an IP address. */
export function hostNames(list: string[], flag: string): { dns: string[]; ip: string[] } {
  const ip = list.filter((n) => isIP(n) !== 0);
  const dns = list.filter((n) => isIP(n) === 0).map((n) => checkDnsName(n, flag));
  return { dns, ip };
}

export function workload(
  id: WorkloadIdentity,
  names: { dns: string[]; ip: string[] },
  owner?: Owner,
): WorkloadPlan {
  identityUri(id); // throws on a group name a certificate cannot carry
  return {
    dir: workloadDir(id),
    identity: id,
    dns: names.dns,
    ip: names.ip,
    ...(owner ? { owner } : {}),
    redisClient: id.kind === "control-plane" || (id.kind === "policy" && REDIS_ROLES.includes(id.role)),
  };
}

export function policyRole(text: string, flag: string): PolicyRole {
  if (!(POLICY_ROLES as readonly string[]).includes(text))
    throw new Error(`${flag}: '${text}' is not a policy role (${POLICY_ROLES.join(", ")})`);
  return text as PolicyRole;
}

/** `UID` or `UID:GID`. */
export function parseOwner(text: string, flag: string): Owner {
  const m = /^(\d+)(?::(\d+))?$/.exec(text);
  if (!m) throw new Error(`${flag}: '${text}' is not UID or UID:GID`);
  const uid = Number(m[1]);
  return { uid, gid: m[2] === undefined ? uid : Number(m[2]) };
}
