// Compiled by scripts/test.d/10-openapi-lint.sh next to mobile.d.ts, the
// types openapi-typescript generates from mobile-sdk-spec/openapi.mobile.yaml,
// with `tsc --strict`: the generated types compile and say what the contract
// means (operation names, narrowed and open enums).
import type { components, operations, paths } from "./mobile";

type Problem = components["schemas"]["Problem"];

// Every mobile operation, and only those, under the names an app uses.
const ops: Record<keyof operations, true> = {
  authorize: true,
  getAuthorizationServerMetadata: true,
  requestDeviceToken: true,
  revokeDeviceToken: true,
  getJWKS: true,
  listConnections: true,
  getConnection: true,
  getSalesforceAccessToken: true,
};

// Problem codes are a union of literals: a typo does not compile.
const code: Problem["code"] = "reauth_required";
// @ts-expect-error: not a documented problem code
const typo: Problem["code"] = "reauth_requird";

// 409 is narrowed to its two codes.
type Conflict = paths["/v1/connections/{id}/access-token"]["get"]["responses"][409]["content"]["application/problem+json"];
const conflict: Conflict["code"] = "connection_revoked";
// @ts-expect-error: 409 never carries upstream_unavailable
const notConflict: Conflict["code"] = "upstream_unavailable";

// 429 carries rate_limited and, on the OAuth endpoints, an OAuth error.
type Limited = paths["/v1/device/token"]["post"]["responses"][429]["content"]["application/problem+json"];
const limited: Limited = { type: "https://tokenwarm.dev/problems/rate_limited", title: "Too Many Requests", status: 429, code: "rate_limited", error: "rate_limited" };

// The token request is form-encoded with the standard parameter names.
type TokenRequest = NonNullable<operations["requestDeviceToken"]["requestBody"]>["content"]["application/x-www-form-urlencoded"];
const req: TokenRequest = { grant_type: "authorization_code", code: "twh_x", code_verifier: "v", redirect_uri: "com.example.app:/cb", client_id: "com.example.app" };

type Status = components["schemas"]["ConnectionStatus"];
function label(s: Status | (string & {})): string {
  switch (s) {
    case "active":
      return "connected";
    case "needs_reauth":
      return "sign in again";
    default:
      return "unavailable"; // open enum: unknown statuses land here
  }
}

export { ops, code, typo, conflict, notConflict, limited, req, label };
