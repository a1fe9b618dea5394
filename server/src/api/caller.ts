import { KmsError } from "../domain/kms-error.js";

/**
 * Who is calling, once authenticated.
 *
 * - `service`: an internal service, identified by the SPIFFE URI SAN of a
 *   client certificate that chains to the configured CA. Service callers may
 *   act for any tenant (the Tenant Service acts for tenants; data services
 *   encrypt every tenant's data).
 * - `tenant`: a bearer JWT holder, bound to the one tenant named by the
 *   token's tenant claim; `subject` is the token's `sub` ("" when absent).
 */
export type Caller =
  | { readonly kind: "service"; readonly spiffeId: string }
  | { readonly kind: "tenant"; readonly tenantId: string; readonly subject: string };

/**
 * Throws TENANT_FORBIDDEN (PermissionDenied, 403) unless `caller` may act for
 * `tenantId`: service callers may act for any tenant; a tenant caller only for
 * its own. The message does not say whether the other tenant exists.
 *
 * Service implementations call it right after `authenticate(ctx)` with the
 * tenant the request names:
 *
 * ```ts
 * const caller = await authenticate(ctx);
 * authorizeTenant(caller, req.tenantId);
 * ```
 */
export function authorizeTenant(caller: Caller, tenantId: string): void {
  if (caller.kind === "service") return;
  if (caller.tenantId === tenantId) return;
  throw new KmsError("TENANT_FORBIDDEN", "the credentials do not grant access to the tenant named in the request", {
    field: "tenant_id",
  });
}

/** A short identity for log lines: "spiffe://matih.local/dev" or "tenant:acme/sub:alice". */
export function describeCaller(caller: Caller): string {
  return caller.kind === "service" ? caller.spiffeId : `tenant:${caller.tenantId}/sub:${caller.subject}`;
}
