import type { HandlerContext } from "@connectrpc/connect";
import { requireTenantAccess } from "../authentication.js";

/**
 * Runs one tenant-scoped call: the caller must be authenticated and allowed to
 * act for `tenantId` before anything is read. Errors (KmsError) are mapped to
 * codes and statuses by the server, in one place, for every protocol.
 */
export async function guardTenantCall<T>(ctx: HandlerContext, tenantId: string, call: () => Promise<T>): Promise<T> {
  await requireTenantAccess(ctx, tenantId);
  return call();
}
