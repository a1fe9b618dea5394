import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";
import { KmsError } from "../domain/kms-error.js";
import { authorizeTenant, type Caller } from "./caller.js";
import type { TokenVerifier } from "./jwt-verifier.js";
import { spiffeTrustDomain, type TlsPeer } from "./tls-peer.js";

export { authorizeTenant, type Caller } from "./caller.js";

/**
 * The door a request came through.
 * - `rpc`: gRPC, gRPC-Web or Connect. Requires a trusted client certificate.
 * - `rest`: the JSON routes transcoded from `google.api.http`. Accepts a
 *   trusted client certificate or a bearer token.
 */
export type AuthenticationChannel = "rpc" | "rest";

/** The per-request facts authentication decides on. */
export interface AuthenticationInputs {
  readonly channel: AuthenticationChannel;
  /** What the TLS handshake established about the client certificate. */
  readonly peer: TlsPeer;
  /** The raw `Authorization` header, if any. Never logged. */
  readonly authorization: string | undefined;
}

/** Turns the inputs into a caller or throws a KmsError (401/403 reasons). */
export type Authenticator = (inputs: AuthenticationInputs) => Promise<Caller>;

export interface AuthenticatorOptions {
  /** Verifies bearer tokens; without it, REST accepts certificates only. */
  readonly verifyToken?: TokenVerifier;
  /**
   * SPIFFE trust domains whose ids are accepted ("matih.local"). Empty or
   * absent: any SPIFFE id in a certificate from the configured CA.
   */
  readonly trustDomains?: readonly string[];
}

/**
 * The authentication rules, in order:
 *
 * 1. A client certificate was presented:
 *    - not authorized by the TLS layer (untrusted CA, expired, self-signed)
 *      → CLIENT_CERTIFICATE_UNTRUSTED naming OpenSSL's verdict, whatever else
 *      the request carries (a failed identity claim is never ignored);
 *    - authorized but without exactly one well-formed SPIFFE URI SAN, or in a
 *      trust domain not accepted → CLIENT_CERTIFICATE_UNTRUSTED;
 *    - otherwise → `{ kind: "service", spiffeId }` (a bearer token alongside
 *      is not consulted).
 * 2. No certificate, RPC channel: a bearer token → CLIENT_CERTIFICATE_REQUIRED
 *    (403); nothing → CREDENTIALS_MISSING (401).
 * 3. No certificate, REST channel: no Authorization header →
 *    CREDENTIALS_MISSING; not `Bearer <token>` → TOKEN_INVALID; otherwise the
 *    token verifier decides (TOKEN_EXPIRED / TOKEN_INVALID / tenant caller).
 */
export function createAuthenticator(options: AuthenticatorOptions = {}): Authenticator {
  const trustDomains = new Set(options.trustDomains ?? []);
  return async function authenticateInputs(inputs: AuthenticationInputs): Promise<Caller> {
    const { peer, channel, authorization } = inputs;
    if (peer.presented) {
      if (!peer.authorized) {
        const verdict = peer.authorizationError ?? "UNKNOWN";
        throw new KmsError(
          "CLIENT_CERTIFICATE_UNTRUSTED",
          `the client certificate is not trusted (${verdict}): it must chain to the configured CA and be within its validity period`,
          { metadata: { tls_error: verdict } },
        );
      }
      if (peer.spiffeId === undefined) {
        throw new KmsError(
          "CLIENT_CERTIFICATE_UNTRUSTED",
          `${peer.spiffeIdProblem ?? "the client certificate carries no SPIFFE id"}; the caller's identity is the certificate's SPIFFE URI SAN`,
        );
      }
      if (trustDomains.size > 0 && !trustDomains.has(spiffeTrustDomain(peer.spiffeId))) {
        throw new KmsError("CLIENT_CERTIFICATE_UNTRUSTED", "the client certificate's SPIFFE id is not in an accepted trust domain", {
          metadata: { trust_domain: spiffeTrustDomain(peer.spiffeId) },
        });
      }
      return { kind: "service", spiffeId: peer.spiffeId };
    }
    if (channel === "rpc") {
      if (authorization !== undefined) {
        throw new KmsError(
          "CLIENT_CERTIFICATE_REQUIRED",
          "RPC routes (gRPC, gRPC-Web, Connect) require a client certificate; bearer tokens are accepted on REST routes only",
        );
      }
      throw new KmsError("CREDENTIALS_MISSING", "RPC routes require a client certificate that chains to the configured CA");
    }
    if (authorization === undefined || authorization.trim() === "") {
      throw new KmsError("CREDENTIALS_MISSING", "no credentials: present a client certificate or an `Authorization: Bearer <token>` header");
    }
    const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(authorization);
    if (match === null || match[1] === undefined) {
      throw new KmsError("TOKEN_INVALID", "the Authorization header must be `Bearer <token>`");
    }
    if (options.verifyToken === undefined) {
      throw new KmsError("TOKEN_INVALID", "bearer tokens are not accepted by this server (no JWKS is configured); use a client certificate");
    }
    return options.verifyToken(match[1]);
  };
}

/** What the authentication context key holds for one request. */
export interface RequestAuthentication {
  readonly inputs: AuthenticationInputs | undefined;
  readonly authenticator: Authenticator | undefined;
  /** Memo: the first `authenticate` of a request decides for all later ones. */
  result: Promise<Caller> | undefined;
  /** The caller `result` fulfilled with, once it has: for `authenticatedCaller`. */
  caller: Caller | undefined;
}

/**
 * The context key holding the per-request authentication inputs (and the
 * authenticator to apply to them). The server sets it for every request, RPC
 * and REST alike; `authenticate(ctx)` reads it.
 */
export const authenticationKey = createContextKey<RequestAuthentication | undefined>(undefined, {
  description: "matih-kms request authentication",
});

/** Context values carrying one request's authentication inputs. */
export function authenticationContextValues(
  inputs: AuthenticationInputs,
  authenticator: Authenticator,
  values: ContextValues = createContextValues(),
): ContextValues {
  return values.set(authenticationKey, { inputs, authenticator, result: undefined, caller: undefined });
}

/**
 * Context values for an already-authenticated caller: for in-process tests of
 * service implementations (`createRouterTransport` with these `contextValues`)
 * and for calls the server makes to itself.
 */
export function callerContextValues(caller: Caller, values: ContextValues = createContextValues()): ContextValues {
  const result = Promise.resolve(caller);
  return values.set(authenticationKey, { inputs: undefined, authenticator: undefined, result, caller });
}

/**
 * Who is calling. Service implementations start every RPC with:
 *
 * ```ts
 * const caller = await authenticate(ctx);
 * authorizeTenant(caller, req.tenantId);
 * ```
 *
 * Throws KmsError CREDENTIALS_MISSING, CLIENT_CERTIFICATE_UNTRUSTED,
 * CLIENT_CERTIFICATE_REQUIRED, TOKEN_INVALID or TOKEN_EXPIRED (see
 * `createAuthenticator` for the rules). The result is memoized per request;
 * the server has already authenticated every request before the
 * implementation runs, so this call is cheap and cannot disagree with it.
 */
export function authenticate(ctx: { readonly values: ContextValues }): Promise<Caller> {
  const state = ctx.values.get(authenticationKey);
  if (state === undefined) {
    return Promise.reject(new KmsError("CREDENTIALS_MISSING", "no credentials: the request carries no authentication context"));
  }
  if (state.result === undefined) {
    if (state.inputs === undefined || state.authenticator === undefined) {
      return Promise.reject(new KmsError("CREDENTIALS_MISSING", "no credentials: the request carries no authentication context"));
    }
    state.result = state.authenticator(state.inputs).then((caller) => (state.caller = caller));
  }
  return state.result;
}

/**
 * The caller, without waiting, when `authenticate` has already decided for
 * this request (the server authenticates every request before its
 * implementation runs); undefined otherwise, and then `authenticate` it is.
 */
export function authenticatedCaller(ctx: { readonly values: ContextValues }): Caller | undefined {
  return ctx.values.get(authenticationKey)?.caller;
}

/** `authenticate` then `authorizeTenant` in one call; returns the caller. */
export async function requireTenantAccess(ctx: { readonly values: ContextValues }, tenantId: string): Promise<Caller> {
  const caller = await authenticate(ctx);
  authorizeTenant(caller, tenantId);
  return caller;
}

/**
 * Defence in depth for every request, before the implementation runs: when
 * the request message has a top-level string field `tenant_id` (every request
 * of this API does), the caller must be allowed to act for that tenant.
 */
export function authorizeMessageTenant<Desc extends DescMessage>(caller: Caller, schema: Desc, message: MessageShape<Desc>): void {
  const field = schema.fields.find((f) => f.name === "tenant_id");
  if (field === undefined || field.fieldKind !== "scalar") return;
  const value = (message as Record<string, unknown>)[field.localName];
  if (typeof value === "string") authorizeTenant(caller, value);
}
