/**
 * Development-mode bearer tokens: an ES256 signing key generated on first
 * start in <data dir>/dev-jwt/, the matching JWKS the server trusts, and a
 * signer for `npm run dev-token -- <tenantId>`. Production mode refuses this
 * JWKS (its key id carries DEV_KEY_ID_PREFIX).
 */
import { randomUUID } from "node:crypto";
import { mkdir, open, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK } from "jose";

export const DEV_JWT_ISSUER = "matih-kms-development";
export const DEV_JWT_AUDIENCE = "matih-kms";
export const DEV_KEY_ID_PREFIX = "matih-kms-dev-";

export interface DevTokenFiles {
  readonly jwksFile: string;
  readonly signingKeyFile: string;
}

export function devTokenFiles(dataDir: string): DevTokenFiles {
  const dir = join(dataDir, "dev-jwt");
  return { jwksFile: join(dir, "jwks.json"), signingKeyFile: join(dir, "signing-key.json") };
}

/** Creates the development signing key and JWKS unless they exist. */
export async function ensureDevTokenKey(dataDir: string): Promise<DevTokenFiles> {
  const files = devTokenFiles(dataDir);
  await mkdir(join(dataDir, "dev-jwt"), { recursive: true, mode: 0o700 });
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = `${DEV_KEY_ID_PREFIX}${randomUUID()}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256" };
  try {
    // 'wx': a second process starting at once keeps the first one's key.
    const handle = await open(files.signingKeyFile, "wx", 0o600);
    try {
      await handle.writeFile(JSON.stringify(privateJwk));
    } finally {
      await handle.close();
    }
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
    await writeFile(files.jwksFile, JSON.stringify({ keys: [publicJwk] }, null, 2));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  return files;
}

/** Signs a one-hour token for `tenantId` with the development key. */
export async function signDevToken(dataDir: string, tenantId: string, tenantClaim = "tenant_id", ttlSeconds = 3600): Promise<string> {
  const jwk = JSON.parse(await readFile(devTokenFiles(dataDir).signingKeyFile, "utf8")) as JWK & { kid: string };
  const key = await importJWK(jwk, "ES256");
  return new SignJWT({ [tenantClaim]: tenantId })
    .setProtectedHeader({ alg: "ES256", kid: jwk.kid })
    .setIssuer(DEV_JWT_ISSUER)
    .setAudience(DEV_JWT_AUDIENCE)
    .setSubject(`dev-user@${tenantId}`)
    .setIssuedAt()
    .setExpirationTime(`${ttlSeconds}s`)
    .sign(key);
}
