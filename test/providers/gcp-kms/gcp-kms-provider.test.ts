/**
 * gcp-kms beyond the shared contract: CRC32C integrity both ways, key
 * version rotation and destruction, and resource-name checks.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { crc32c } from "../../../server/src/providers/gcp-kms/crc32c.js";
import { createGcpKmsClient } from "../../../server/src/providers/gcp-kms/gcp-kms-provider.js";
import { startLocalCloudKms, type LocalCloudKms } from "../targets/gcp-kms.js";

const context = { purpose: "dek" as const, tenantId: "acme", keyId: "pii", version: 1 };

describe("gcp-kms provider against the local Cloud KMS", () => {
  let local: LocalCloudKms;
  beforeAll(async () => {
    local = await startLocalCloudKms();
  });
  afterAll(async () => {
    await local.close();
  });

  it("the server refuses a request whose CRC32C does not match its data, so the provider's checksums are what let the round trip pass", async () => {
    const client = await createGcpKmsClient({ apiEndpoint: local.server.host, port: local.server.port, tls: "insecure" });
    const plaintext = Buffer.alloc(32, 4);
    await expect(
      client.encrypt({ name: local.keyA, plaintext, plaintextCrc32c: { value: crc32c(plaintext) ^ 1 } }, { timeout: 3_000, maxRetries: 0 }),
    ).rejects.toMatchObject({ code: 3, details: expect.stringContaining("checksum in field plaintext_crc32c") });
    const [ok] = await client.encrypt({ name: local.keyA, plaintext, plaintextCrc32c: { value: crc32c(plaintext) } }, { timeout: 3_000, maxRetries: 0 });
    expect(ok.verifiedPlaintextCrc32c).toBe(true);
    expect(ok.verifiedAdditionalAuthenticatedDataCrc32c).toBe(false);
    await client.close();
  });

  it("detects a response corrupted in transit by its checksum, on wrap and on unwrap, as unavailable", async () => {
    const provider = await local.open(local.keyA);
    const blob = await provider.wrap(Buffer.alloc(32, 5), context);
    local.server.corruptResponses(true);
    try {
      await expect(provider.wrap(Buffer.alloc(32, 5), context)).rejects.toMatchObject({ failure: "unavailable", message: expect.stringContaining("integrity check failed") });
      await expect(provider.unwrap(blob, context)).rejects.toMatchObject({ failure: "unavailable", message: expect.stringContaining("integrity check failed") });
    } finally {
      local.server.corruptResponses(false);
    }
    expect(await provider.unwrap(blob, context)).toEqual(Buffer.alloc(32, 5));
    await provider.close();
  });

  it("unwraps blobs from an older key version after rotation, and wraps under the new primary", async () => {
    const keyName = local.server.createKey("matih", "rotating");
    const provider = await local.open(keyName);
    const old = await provider.wrap(Buffer.alloc(32, 6), context);
    expect(old.readUInt32BE(1)).toBe(1); // the local server's blobs name their version in clear
    local.server.rotateKey(keyName);
    const fresh = await provider.wrap(Buffer.alloc(32, 7), context);
    expect(fresh.readUInt32BE(1)).toBe(2);
    expect(await provider.unwrap(old, context)).toEqual(Buffer.alloc(32, 6));
    expect(await provider.unwrap(fresh, context)).toEqual(Buffer.alloc(32, 7));
    // Destroying the old version revokes what it wrapped, and only that.
    local.server.setVersionState(keyName, 1, "DESTROYED");
    await expect(provider.unwrap(old, context)).rejects.toMatchObject({ failure: "key-disabled" });
    expect(await provider.unwrap(fresh, context)).toEqual(Buffer.alloc(32, 7));
    await provider.close();
  });

  it("refuses at open a name that is not a CryptoKey (a version, a key ring)", async () => {
    await expect(local.open(`${local.keyA}/cryptoKeyVersions/1`)).rejects.toThrow(/keyName must be/);
    await expect(local.open("projects/p/locations/l/keyRings/r")).rejects.toThrow(/keyName must be/);
  });

  it("a key that does not exist is refused as permission-denied, as Cloud KMS hides existence from callers without access", async () => {
    const provider = await local.open("projects/matih-test/locations/global/keyRings/matih/cryptoKeys/nope");
    await expect(provider.wrap(Buffer.alloc(32, 1), context)).rejects.toMatchObject({ failure: "permission-denied" });
    await provider.close();
  });
});
