import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JSONWebKeySet, type JWK } from "jose";
import {
  ensureDevelopmentPki,
  type CertificateAndKey,
  type CertificateAuthority,
  type PkiPaths,
  type PkiPems,
} from "../../server/src/tls/dev-pki.js";

/** A fresh development PKI in its own temporary directory. */
export interface TestPki extends PkiPaths, PkiPems {
  readonly ca: CertificateAuthority;
  /** TLS material for `createKmsServer({ tls })`. */
  readonly serverTls: { readonly key: string; readonly cert: string; readonly ca: string };
  /** The trusted client certificate (SPIFFE id spiffe://matih.local/dev). */
  readonly client: CertificateAndKey;
  cleanup(): Promise<void>;
}

export async function createTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), "matih-kms-pki-"));
  const pki = await ensureDevelopmentPki(join(dir, "tls"));
  return {
    ...pki,
    ca: { cert: pki.caCert, key: pki.caKey },
    serverTls: { key: pki.serverKey, cert: pki.serverCert, ca: pki.caCert },
    client: { cert: pki.clientCert, key: pki.clientKey },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export const TEST_ISSUER = "https://issuer.test.matih.local";
export const TEST_AUDIENCE = "matih-kms";
export const TEST_ALGORITHM = "ES256";

export interface SignTokenOptions {
  /** The tenant claim's value; omit for a token without one. */
  readonly tenantId?: string;
  /** Seconds from now until `exp`; negative for an expired token. Default 3600. */
  readonly expiresIn?: number;
  /** Sign with another key (a key the server does not know). */
  readonly key?: CryptoKey;
  readonly subject?: string;
  readonly issuer?: string;
  readonly audience?: string;
  /** Seconds from now until `nbf` (positive: not yet valid). */
  readonly notBefore?: number;
  /** The claim name carrying the tenant. Default `tenant_id`. */
  readonly tenantClaim?: string;
  readonly extraClaims?: Readonly<Record<string, unknown>>;
}

/** A token issuer for tests: a signing key, its JWKS (also written to a file) and `signToken`. */
export interface TestTokenIssuer {
  readonly issuer: string;
  readonly audience: string;
  readonly jwks: JSONWebKeySet;
  readonly jwksPath: string;
  readonly kid: string;
  signToken(options: SignTokenOptions): Promise<string>;
}

/** A fresh ES256 key pair (e.g. for a token the server must refuse). */
export async function generateSigningKey(): Promise<{ privateKey: CryptoKey; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(TEST_ALGORITHM, { extractable: true });
  return { privateKey, publicJwk: await exportJWK(publicKey) };
}

export async function createTestTokenIssuer(dir: string, options: { readonly issuer?: string; readonly audience?: string } = {}): Promise<TestTokenIssuer> {
  const issuer = options.issuer ?? TEST_ISSUER;
  const audience = options.audience ?? TEST_AUDIENCE;
  const { privateKey, publicJwk } = await generateSigningKey();
  const kid = "test-key-1";
  const jwks: JSONWebKeySet = { keys: [{ ...publicJwk, kid, alg: TEST_ALGORITHM, use: "sig" }] };
  const jwksPath = join(dir, "jwks.json");
  await writeFile(jwksPath, JSON.stringify(jwks));
  return {
    issuer,
    audience,
    jwks,
    jwksPath,
    kid,
    signToken: (token) => signToken({ privateKey, kid, issuer, audience }, token),
  };
}

/** Signs a JWT with the given key and defaults. */
export async function signToken(
  signer: { readonly privateKey: CryptoKey; readonly kid: string; readonly issuer: string; readonly audience: string },
  options: SignTokenOptions,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { ...options.extraClaims };
  if (options.tenantId !== undefined) claims[options.tenantClaim ?? "tenant_id"] = options.tenantId;
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: TEST_ALGORITHM, kid: signer.kid, typ: "JWT" })
    .setIssuer(options.issuer ?? signer.issuer)
    .setAudience(options.audience ?? signer.audience)
    .setSubject(options.subject ?? "user-1")
    .setIssuedAt(now - 5)
    .setExpirationTime(now + (options.expiresIn ?? 3600));
  if (options.notBefore !== undefined) jwt.setNotBefore(now + options.notBefore);
  return jwt.sign(options.key ?? signer.privateKey);
}
