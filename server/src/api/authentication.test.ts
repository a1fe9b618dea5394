import { describe, expect, it } from "vitest";
import { createContextValues } from "@connectrpc/connect";
import { KmsError, type ErrorReason } from "../domain/kms-error.js";
import {
  authenticate,
  authenticationContextValues,
  authorizeTenant,
  callerContextValues,
  createAuthenticator,
  type AuthenticationInputs,
} from "./authentication.js";
import type { TlsPeer } from "./tls-peer.js";
import { parseSubjectAltName } from "./tls-peer.js";

const noCert: TlsPeer = { presented: false, authorized: false, authorizationError: undefined, spiffeId: undefined, spiffeIdProblem: undefined };
const trusted: TlsPeer = { presented: true, authorized: true, authorizationError: undefined, spiffeId: "spiffe://matih.local/svc", spiffeIdProblem: undefined };
const untrusted: TlsPeer = { presented: true, authorized: false, authorizationError: "CERT_HAS_EXPIRED", spiffeId: undefined, spiffeIdProblem: undefined };

const verifyToken = async (token: string) => {
  if (token === "good") return { kind: "tenant" as const, tenantId: "t1", subject: "alice" };
  throw new KmsError("TOKEN_INVALID", "bad token");
};

async function reasonOf(promise: Promise<unknown>): Promise<ErrorReason | "ok"> {
  try {
    await promise;
    return "ok";
  } catch (err) {
    return (err as KmsError).reason;
  }
}

describe("createAuthenticator rules", () => {
  const authenticateInputs = createAuthenticator({ verifyToken });
  const cases: Array<[string, AuthenticationInputs, ErrorReason | "ok"]> = [
    ["rpc, trusted cert", { channel: "rpc", peer: trusted, authorization: undefined }, "ok"],
    ["rpc, nothing", { channel: "rpc", peer: noCert, authorization: undefined }, "CREDENTIALS_MISSING"],
    ["rpc, token only", { channel: "rpc", peer: noCert, authorization: "Bearer good" }, "CLIENT_CERTIFICATE_REQUIRED"],
    ["rpc, untrusted cert", { channel: "rpc", peer: untrusted, authorization: undefined }, "CLIENT_CERTIFICATE_UNTRUSTED"],
    ["rest, trusted cert", { channel: "rest", peer: trusted, authorization: undefined }, "ok"],
    ["rest, good token", { channel: "rest", peer: noCert, authorization: "bearer good" }, "ok"],
    ["rest, bad token", { channel: "rest", peer: noCert, authorization: "Bearer bad" }, "TOKEN_INVALID"],
    ["rest, not bearer", { channel: "rest", peer: noCert, authorization: "Basic abc" }, "TOKEN_INVALID"],
    ["rest, nothing", { channel: "rest", peer: noCert, authorization: undefined }, "CREDENTIALS_MISSING"],
    ["rest, untrusted cert plus good token", { channel: "rest", peer: untrusted, authorization: "Bearer good" }, "CLIENT_CERTIFICATE_UNTRUSTED"],
    [
      "rest, trusted cert without SPIFFE id",
      { channel: "rest", peer: { ...trusted, spiffeId: undefined, spiffeIdProblem: "no SPIFFE URI SAN" }, authorization: undefined },
      "CLIENT_CERTIFICATE_UNTRUSTED",
    ],
  ];
  it.each(cases)("%s → %s", async (_name, inputs, expected) => {
    expect(await reasonOf(authenticateInputs(inputs))).toBe(expected);
  });

  it("REST without a configured JWKS refuses tokens", async () => {
    expect(await reasonOf(createAuthenticator()({ channel: "rest", peer: noCert, authorization: "Bearer good" }))).toBe("TOKEN_INVALID");
  });

  it("restricts SPIFFE trust domains when configured", async () => {
    const strict = createAuthenticator({ trustDomains: ["other.domain"] });
    expect(await reasonOf(strict({ channel: "rpc", peer: trusted, authorization: undefined }))).toBe("CLIENT_CERTIFICATE_UNTRUSTED");
  });
});

describe("authenticate(ctx) and authorizeTenant", () => {
  it("memoizes the decision per request", async () => {
    let calls = 0;
    const counting = async () => {
      calls++;
      return { kind: "service" as const, spiffeId: "spiffe://x/y" };
    };
    const values = authenticationContextValues({ channel: "rpc", peer: trusted, authorization: undefined }, counting);
    await authenticate({ values });
    await authenticate({ values });
    expect(calls).toBe(1);
  });

  it("without authentication context → CREDENTIALS_MISSING; with a given caller → that caller", async () => {
    expect(await reasonOf(authenticate({ values: createContextValues() }))).toBe("CREDENTIALS_MISSING");
    const caller = { kind: "tenant" as const, tenantId: "t1", subject: "s" };
    expect(await authenticate({ values: callerContextValues(caller) })).toBe(caller);
  });

  it("lets service callers act for any tenant and tenant callers for their own only", () => {
    expect(() => authorizeTenant({ kind: "service", spiffeId: "spiffe://x/y" }, "t2")).not.toThrow();
    expect(() => authorizeTenant({ kind: "tenant", tenantId: "t1", subject: "" }, "t1")).not.toThrow();
    expect(() => authorizeTenant({ kind: "tenant", tenantId: "t1", subject: "" }, "t2")).toThrow(
      expect.objectContaining({ reason: "TENANT_FORBIDDEN" }),
    );
  });
});

describe("parseSubjectAltName", () => {
  it("splits Node's subjectAltName string", () => {
    expect(parseSubjectAltName("DNS:localhost, URI:spiffe://matih.local/dev, IP Address:127.0.0.1")).toEqual([
      { type: "DNS", value: "localhost" },
      { type: "URI", value: "spiffe://matih.local/dev" },
      { type: "IP Address", value: "127.0.0.1" },
    ]);
  });

  it("does not let a quoted value smuggle in a second entry", () => {
    expect(parseSubjectAltName('DNS:"evil, URI:spiffe://matih.local/admin"')).toEqual([
      { type: "DNS", value: "evil, URI:spiffe://matih.local/admin" },
    ]);
  });
});
