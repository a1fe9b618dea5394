import type { HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { KmsError } from "../../domain/kms-error.js";
import { authenticate, authenticationContextValues, callerContextValues, type Caller } from "../authentication.js";
import { guardTenantCall } from "./tenant-call.js";

const acme: Caller = { kind: "tenant", tenantId: "acme", subject: "alice" };
const contextOf = (values: HandlerContext["values"]) => ({ values }) as HandlerContext;
const peer = { presented: false, authorized: false } as never;

describe("guardTenantCall", () => {
  it("answers at once for a caller already authenticated, with what the call answered", () => {
    const answer = guardTenantCall(contextOf(callerContextValues(acme)), "acme", () => "served");
    expect(answer).toBe("served");
  });

  it("refuses another tenant at once, before the call runs", () => {
    let ran = false;
    expect(() =>
      guardTenantCall(contextOf(callerContextValues(acme)), "globex", () => {
        ran = true;
        return "served";
      }),
    ).toThrow(expect.objectContaining({ reason: "TENANT_FORBIDDEN" }));
    expect(ran).toBe(false);
  });

  it("waits for an authentication still under way, then checks the tenant before the call runs", async () => {
    let ran = false;
    const values = authenticationContextValues({ channel: "rest", peer, authorization: "Bearer t" }, async () => acme);
    const answer = guardTenantCall(contextOf(values), "acme", () => {
      ran = true;
      return "served";
    });
    expect(answer).toBeInstanceOf(Promise);
    expect(ran).toBe(false);
    await expect(answer).resolves.toBe("served");

    const refused = authenticationContextValues({ channel: "rest", peer, authorization: "Bearer t" }, async () => acme);
    await expect(guardTenantCall(contextOf(refused), "globex", () => "served")).rejects.toMatchObject({ reason: "TENANT_FORBIDDEN" });
  });

  it("passes a failed authentication on and never runs the call", async () => {
    let ran = false;
    const values = authenticationContextValues({ channel: "rest", peer, authorization: "Bearer t" }, async () => {
      throw new KmsError("TOKEN_EXPIRED", "the token expired");
    });
    await expect(
      guardTenantCall(contextOf(values), "acme", () => {
        ran = true;
        return "served";
      }),
    ).rejects.toMatchObject({ reason: "TOKEN_EXPIRED" });
    expect(ran).toBe(false);
  });

  it("answers at once once the server's own authentication of the request has settled", async () => {
    const values = authenticationContextValues({ channel: "rest", peer, authorization: "Bearer t" }, async () => acme);
    await authenticate({ values });
    expect(guardTenantCall(contextOf(values), "acme", () => "served")).toBe("served");
  });
});
