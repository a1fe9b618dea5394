import { Code, type ConnectError, type Interceptor } from "@connectrpc/connect";
import { KmsError } from "../domain/kms-error.js";
import { authenticate, authorizeMessageTenant } from "./authentication.js";
import { errorDetailOf, reasonName, toConnectError } from "./error-mapping.js";
import type { Logger } from "./logger.js";

export interface RpcGuardOptions {
  readonly log: Logger;
  /** True once the server drains: new calls are refused with SHUTTING_DOWN. */
  readonly isDraining: () => boolean;
}

/**
 * The interceptor every gRPC, gRPC-Web and Connect call passes through:
 *
 * 1. refuse new calls while draining (Unavailable, SHUTTING_DOWN);
 * 2. authenticate (RPC routes require a trusted client certificate);
 * 3. check the request's `tenant_id` against the caller (defence in depth;
 *    implementations check it too);
 * 4. map whatever the implementation throws through the one error table, so
 *    a KmsError reaches the client with its code, message and ErrorDetail and
 *    an unexpected fault as a generic Internal (its cause logged here).
 */
export function createRpcGuard(options: RpcGuardOptions): Interceptor {
  const { log } = options;
  return (next) => async (req) => {
    try {
      if (options.isDraining()) throw new KmsError("SHUTTING_DOWN", "the server is shutting down; retry on another instance");
      const caller = await authenticate({ values: req.contextValues });
      if (!req.stream) authorizeMessageTenant(caller, req.method.input, req.message);
      return await next(req);
    } catch (err) {
      return Promise.reject(refusalToConnectError(err, log, `${req.service.typeName}/${req.method.name}`));
    }
  };
}

/**
 * What a failed RPC sends: the error through the one error table; an
 * authentication or authorization refusal is also logged (with its reason,
 * never the credentials). Shared with the gRPC fast path.
 */
export function refusalToConnectError(err: unknown, log: Logger, procedure: string): ConnectError {
  const error = toConnectError(err, log, { procedure });
  if (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied) {
    const detail = errorDetailOf(error);
    log.warn("request refused", { procedure, reason: detail === undefined ? undefined : reasonName(detail.reason) });
  }
  return error;
}
