import { readFile } from "node:fs/promises";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
} from "jose";
import { isValidId } from "../domain/identifiers.js";
import { KmsError } from "../domain/kms-error.js";
import type { Caller } from "./caller.js";

/** Where the token signing keys come from. */
export type JwksSource =
  /** A JWKS JSON file, read once at start-up. */
  | { readonly file: string }
  /** A JWKS URL, fetched and cached by jose (refetched on an unknown `kid`). */
  | { readonly url: string }
  /** A JWKS given inline (tests, embedded configuration). */
  | { readonly keys: JSONWebKeySet };

export interface JwtVerifierOptions {
  readonly jwks: JwksSource;
  /** Required `iss`. */
  readonly issuer: string;
  /** Required `aud` (one of them). */
  readonly audience: string | readonly string[];
  /** The claim naming the caller's tenant. Default `tenant_id`. */
  readonly tenantClaim?: string;
  /** Accepted `alg` values. Default `DEFAULT_JWT_ALGORITHMS`; never "none" or HMAC. */
  readonly algorithms?: readonly string[];
  /** Allowed clock skew for `exp`/`nbf`/`iat`, in seconds. Default 30. */
  readonly clockToleranceSeconds?: number;
}

export const DEFAULT_TENANT_CLAIM = "tenant_id";
export const DEFAULT_JWT_ALGORITHMS: readonly string[] = ["ES256", "ES384", "RS256", "PS256", "EdDSA", "Ed25519"];
/** Longer tokens are refused before any parsing. */
export const MAX_TOKEN_LENGTH = 8192;

export type TenantCaller = Extract<Caller, { kind: "tenant" }>;

/** Verifies a bearer token and returns the tenant caller it names; throws KmsError. */
export type TokenVerifier = (token: string) => Promise<TenantCaller>;

/**
 * Builds the bearer-token verifier. Outcomes:
 * - valid signature by a JWKS key with an allowed algorithm, matching issuer
 *   and audience, unexpired, with a well-formed tenant claim → tenant caller;
 * - expired or not yet valid → TOKEN_EXPIRED;
 * - anything else wrong with the token → TOKEN_INVALID;
 * - the remote JWKS cannot be fetched → PROVIDER_UNAVAILABLE (503, retryable:
 *   the fault is ours, not the token's).
 */
export async function createJwtVerifier(options: JwtVerifierOptions): Promise<TokenVerifier> {
  const getKey = await keyResolver(options.jwks);
  const tenantClaim = options.tenantClaim ?? DEFAULT_TENANT_CLAIM;
  const algorithms = [...(options.algorithms ?? DEFAULT_JWT_ALGORITHMS)];
  for (const alg of algorithms) {
    if (alg === "none" || alg.startsWith("HS")) throw new Error(`JWT algorithm ${alg} is not allowed for bearer tokens`);
  }
  const audience = typeof options.audience === "string" ? options.audience : [...options.audience];
  const clockTolerance = options.clockToleranceSeconds ?? 30;

  return async function verifyToken(token: string): Promise<TenantCaller> {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw tokenInvalid("the bearer token is empty or too long");
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        issuer: options.issuer,
        audience,
        algorithms,
        clockTolerance,
        requiredClaims: ["exp"],
      }));
    } catch (err) {
      throw mapJoseError(err, "url" in options.jwks);
    }
    const tenantId = payload[tenantClaim];
    if (typeof tenantId !== "string" || !isValidId(tenantId)) {
      throw tokenInvalid(`the bearer token's "${tenantClaim}" claim is missing or not a valid tenant id`);
    }
    const subject = typeof payload["sub"] === "string" ? payload["sub"] : "";
    return { kind: "tenant", tenantId, subject };
  };
}

async function keyResolver(source: JwksSource): Promise<JWTVerifyGetKey> {
  if ("keys" in source) return createLocalJWKSet(source.keys);
  if ("file" in source) {
    const text = await readFile(source.file, "utf8");
    let jwks: JSONWebKeySet;
    try {
      jwks = JSON.parse(text) as JSONWebKeySet;
    } catch (err) {
      throw new Error(`JWKS file ${source.file} is not valid JSON`, { cause: err });
    }
    if (!Array.isArray(jwks.keys)) throw new Error(`JWKS file ${source.file} has no "keys" array`);
    return createLocalJWKSet(jwks);
  }
  const url = new URL(source.url);
  if (url.protocol !== "https:" && url.hostname !== "localhost" && url.hostname !== "127.0.0.1") {
    throw new Error(`JWKS URL ${source.url} must use https`);
  }
  return createRemoteJWKSet(url, { timeoutDuration: 5_000, cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000 });
}

function mapJoseError(err: unknown, remoteKeys: boolean): KmsError {
  if (err instanceof joseErrors.JWTExpired) {
    return new KmsError("TOKEN_EXPIRED", "the bearer token has expired", { cause: err });
  }
  if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === "nbf") {
    return new KmsError("TOKEN_EXPIRED", "the bearer token is not yet valid", { cause: err });
  }
  const keysUnavailable =
    err instanceof joseErrors.JWKSTimeout ||
    err instanceof joseErrors.JWKSInvalid ||
    (remoteKeys && !(err instanceof joseErrors.JOSEError));
  if (keysUnavailable) {
    return new KmsError("PROVIDER_UNAVAILABLE", "the token signing keys could not be loaded", {
      metadata: { provider: "jwks" },
      cause: err,
    });
  }
  if (err instanceof joseErrors.JOSEError) {
    return tokenInvalid(`the bearer token is invalid (${err.code}: ${err.message})`, err);
  }
  return tokenInvalid("the bearer token is invalid", err);
}

function tokenInvalid(message: string, cause?: unknown): KmsError {
  return new KmsError("TOKEN_INVALID", message, cause === undefined ? {} : { cause });
}
