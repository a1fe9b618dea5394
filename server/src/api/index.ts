/**
 * The API layer's public entry point: the server factory, the authentication
 * helpers service implementations use, the error table and the logger.
 */
export {
  createKmsServer,
  DEFAULT_GRACE_MS,
  DEFAULT_HOST,
  DEFAULT_PORT,
  HEALTH_PATH,
  type KmsServer,
  type KmsServerAuthOptions,
  type KmsServerOptions,
  type KmsServerRoute,
  type KmsServerServices,
  type KmsServerTls,
} from "./kms-server.js";
export {
  authenticate,
  authenticationContextValues,
  authenticationKey,
  authorizeTenant,
  callerContextValues,
  createAuthenticator,
  requireTenantAccess,
  type AuthenticationChannel,
  type AuthenticationInputs,
  type Authenticator,
  type Caller,
} from "./authentication.js";
export { describeCaller } from "./caller.js";
export {
  codeForReason,
  errorToJson,
  httpStatusFor,
  httpStatusForCode,
  toConnectError,
  type RestErrorBody,
} from "./error-mapping.js";
export {
  createJwtVerifier,
  DEFAULT_JWT_ALGORITHMS,
  DEFAULT_TENANT_CLAIM,
  type JwksSource,
  type JwtVerifierOptions,
  type TokenVerifier,
} from "./jwt-verifier.js";
export { createJsonLinesLogger, silentLogger, type LogFields, type Logger } from "./logger.js";
export { DEFAULT_MAX_BODY_BYTES } from "./request-body.js";
