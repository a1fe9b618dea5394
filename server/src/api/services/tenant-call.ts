import type { HandlerContext } from "@connectrpc/connect";
import type { Awaitable } from "../../service/awaitable.js";
import { authenticatedCaller, authorizeTenant, requireTenantAccess } from "../authentication.js";

/**
 * Runs one tenant-scoped call: the caller must be authenticated and allowed to
 * act for `tenantId` before anything is read. Errors (KmsError) are mapped to
 * codes and statuses by the server, in one place, for every protocol.
 *
 * A caller the server has already authenticated is checked at once, and a
 * `call` that answers at once is answered at once (the hot path: awaitable.ts).
 */
export function guardTenantCall<T>(ctx: HandlerContext, tenantId: string, call: () => Awaitable<T>): Awaitable<T> {
  const caller = authenticatedCaller(ctx);
  if (caller === undefined) return requireTenantAccess(ctx, tenantId).then(call);
  authorizeTenant(caller, tenantId);
  return call();
}
