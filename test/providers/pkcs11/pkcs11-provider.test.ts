/**
 * pkcs11 beyond the shared contract, on a SoftHSM2 token of its own: what
 * opening refuses, key generation for development, sharing one token between
 * providers, the session pool, and the lazy native module.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pkcs11SkipReason, startLocalToken, type LocalToken } from "../targets/pkcs11.js";

const run = promisify(execFile);
const skip = pkcs11SkipReason();
const context = { purpose: "kek" as const, tenantId: "acme", keyId: "pii", version: 1 };

describe.skipIf(skip !== undefined)(`pkcs11 provider on SoftHSM2${skip === undefined ? "" : ` — skipped: ${skip}`}`, () => {
  let local: LocalToken;
  beforeAll(async () => {
    local = await startLocalToken();
  });
  afterAll(async () => {
    await local?.close();
  });

  it("refuses to open on a key that could leave the token (extractable, not sensitive)", async () => {
    await local.token.createKey("leaky", { extractable: true });
    await expect(local.open("leaky")).rejects.toMatchObject({ failure: "other", message: expect.stringContaining("must be CKA_SENSITIVE and not CKA_EXTRACTABLE") });
  });

  it("classifies what prevents opening: a wrong PIN, a missing key, a missing token", async () => {
    await expect(local.open(local.keyA, { pin: "0000" })).rejects.toMatchObject({ failure: "permission-denied", message: expect.stringContaining("CKR_PIN_INCORRECT") });
    await expect(local.open("no-such-key")).rejects.toMatchObject({ failure: "key-disabled" });
    await expect(local.open(local.keyA, { tokenLabel: "no-such-token" })).rejects.toMatchObject({ failure: "unavailable" });
    await expect(local.open(local.keyA, { library: "/nonexistent/libpkcs11.so" })).rejects.toMatchObject({ failure: "unavailable" });
  });

  it("generates a sensitive, non-extractable AES-256 key when asked to (development), and finds it again", async () => {
    const created = await local.open("generated", { createKeyIfMissing: true });
    const blob = await created.wrap(Buffer.alloc(32, 1), context);
    await created.close();
    expect(await local.token.keyIsLockedIn("generated")).toBe(true);
    const reopened = await local.open("generated");
    expect(await reopened.unwrap(blob, context)).toEqual(Buffer.alloc(32, 1));
    await reopened.close();
  });

  it("two providers on one token: closing one leaves the other's sessions, login and library working", async () => {
    const a = await local.open(local.keyA);
    const b = await local.open(local.keyB);
    const blob = await b.wrap(Buffer.alloc(32, 2), context);
    await a.close();
    expect(await b.unwrap(blob, context)).toEqual(Buffer.alloc(32, 2));
    await b.close();
  });

  it("queues more concurrent operations than it has sessions, and serves them all", async () => {
    const provider = await local.open(local.keyA, { sessions: 1 });
    const secrets = Array.from({ length: 40 }, (_, i) => Buffer.alloc(32, i));
    const blobs = await Promise.all(secrets.map((secret) => provider.wrap(secret, context)));
    expect(await Promise.all(blobs.map((blob) => provider.unwrap(blob, context)))).toEqual(secrets);
    await provider.close();
  });

  it("a key deleted from the token is key-disabled", async () => {
    await local.token.createKey("doomed");
    const provider = await local.open("doomed");
    const blob = await provider.wrap(Buffer.alloc(32, 3), context);
    await local.token.destroyKey("doomed");
    await expect(provider.unwrap(blob, context)).rejects.toMatchObject({ failure: "key-disabled" });
    await provider.close();
  });

  it("names its key with an RFC 7512 PKCS#11 URI", async () => {
    const provider = await local.open(local.keyA);
    expect(provider.keyRef).toBe("pkcs11:token=matih-test;object=matih-root;type=secret-key");
    await provider.close();
  });

  it.skipIf(!existsSync("/proc/self/maps"))("loads the native pkcs11js module only when a pkcs11 provider opens", async () => {
    const script = `
      import { readFileSync } from "node:fs";
      const loaded = () => readFileSync("/proc/self/maps", "utf8").includes("pkcs11.node");
      const { createRootProvider } = await import("./server/src/providers/create-root-provider.ts");
      await import("./server/src/providers/pkcs11/pkcs11-provider.ts");
      const before = loaded();
      const root = await createRootProvider({ kind: "pkcs11", library: ${JSON.stringify(local.token.library)}, tokenLabel: ${JSON.stringify(local.token.tokenLabel)}, pin: ${JSON.stringify(local.token.pin)}, keyLabel: ${JSON.stringify(local.keyA)} });
      const after = loaded();
      await root.close();
      console.log(JSON.stringify({ before, after }));
    `;
    const { stdout } = await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { env: { ...process.env }, cwd: process.cwd() });
    expect(JSON.parse(stdout.trim().split("\n").pop() ?? "{}")).toEqual({ before: false, after: true });
  });
});
