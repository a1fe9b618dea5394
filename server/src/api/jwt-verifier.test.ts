import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JSONWebKeySet } from "jose";
import type { KmsError } from "../domain/kms-error.js";
import { createJwtVerifier } from "./jwt-verifier.js";

let privateKey: CryptoKey;
let jwks: JSONWebKeySet;
let jwksServer: Server;
let jwksUrl: string;

beforeAll(async () => {
  const pair = await generateKeyPair("ES256");
  privateKey = pair.privateKey;
  jwks = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "ES256" }] };
  jwksServer = createServer((_req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(jwks));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
});
afterAll(() => new Promise<void>((resolve) => jwksServer.close(() => resolve())));

function token(claims: Record<string, unknown>, expiresIn = 600): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: "k1" })
    .setIssuer("iss")
    .setAudience("aud")
    .setSubject("alice")
    .setExpirationTime(now + expiresIn)
    .sign(privateKey);
}

async function reason(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (err) {
    return (err as KmsError).reason;
  }
}

describe("createJwtVerifier", () => {
  it("verifies against a JWKS URL and reads a configurable tenant claim", async () => {
    const verify = await createJwtVerifier({ jwks: { url: jwksUrl }, issuer: "iss", audience: "aud", tenantClaim: "org" });
    expect(await verify(await token({ org: "acme" }))).toEqual({ kind: "tenant", tenantId: "acme", subject: "alice" });
    expect(await reason(verify(await token({ tenant_id: "acme" })))).toBe("TOKEN_INVALID");
  });

  it("maps expiry to TOKEN_EXPIRED and everything else to TOKEN_INVALID", async () => {
    const verify = await createJwtVerifier({ jwks: { keys: jwks }, issuer: "iss", audience: ["aud", "other"] });
    expect(await reason(verify(await token({ tenant_id: "t1" }, -600)))).toBe("TOKEN_EXPIRED");
    expect(await reason(verify("a.b.c"))).toBe("TOKEN_INVALID");
    expect(await reason(verify("x".repeat(9000)))).toBe("TOKEN_INVALID");
  });

  it("reports an unreachable JWKS URL as PROVIDER_UNAVAILABLE, not as the caller's fault", async () => {
    const verify = await createJwtVerifier({ jwks: { url: "http://127.0.0.1:9/jwks.json" }, issuer: "iss", audience: "aud" });
    expect(await reason(verify(await token({ tenant_id: "t1" })))).toBe("PROVIDER_UNAVAILABLE");
  });

  it("refuses to be configured with HMAC or 'none' algorithms", async () => {
    await expect(createJwtVerifier({ jwks: { keys: jwks }, issuer: "i", audience: "a", algorithms: ["HS256"] })).rejects.toThrow(/not allowed/);
  });
});
