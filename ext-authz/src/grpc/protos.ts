import protobuf from "protobufjs";
import { loadProtoRoot } from "@portico/contract";

export { HEALTH_SERVICE, healthTypes, method } from "@portico/common";

export const AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization";

let authRoot: protobuf.Root | undefined;

/** Envoy's ext_authz v3 messages, loaded once. */
export function authTypes(): {
  CheckRequest: protobuf.Type;
  CheckResponse: protobuf.Type;
  structStringField: string;
} {
  authRoot ??= loadProtoRoot(["envoy/service/auth/v3/external_auth.proto"]);
  // google.protobuf.Value comes from protobufjs's built-in copy, whose field names are camelCase even
  // though every other message here keeps the .proto's snake_case; find the name by field number.
  const value = authRoot.lookupType("google.protobuf.Value");
  return {
    CheckRequest: authRoot.lookupType("envoy.service.auth.v3.CheckRequest"),
    CheckResponse: authRoot.lookupType("envoy.service.auth.v3.CheckResponse"),
    structStringField: value.fieldsArray.find((f) => f.id === 3)!.name,
  };
}
