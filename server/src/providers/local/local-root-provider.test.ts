import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MASTER_KEY_FILE, MasterKeyFileError, masterKeyFileName, openLocalRootProvider } from "./local-root-provider.js";

describe("local root provider", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-local-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const context = { tenantId: "t1", keyId: "pii", kekVersion: 1 };

  it("creates a 32-byte master key file with mode 0600 on first start", async () => {
    const provider = await openLocalRootProvider(dir);
    const info = await stat(join(dir, MASTER_KEY_FILE));
    expect(info.mode & 0o777).toBe(0o600);
    expect((await readFile(join(dir, MASTER_KEY_FILE))).length).toBe(32);
    await provider.close();
  });

  it("reuses the same master key across restarts, so KEKs wrapped before still unwrap", async () => {
    const first = await openLocalRootProvider(dir);
    const wrapped = await first.wrap(Buffer.alloc(32, 5), context);
    const keyId = first.currentKeyId;
    await first.close();
    const second = await openLocalRootProvider(dir);
    expect(second.currentKeyId).toBe(keyId);
    expect(await second.unwrap(wrapped, context, keyId)).toEqual(Buffer.alloc(32, 5));
    await second.close();
  });

  it("never stores the plaintext in the wrapped form", async () => {
    const provider = await openLocalRootProvider(dir);
    const secret = Buffer.alloc(32, 0xab);
    const wrapped = await provider.wrap(secret, context);
    expect(wrapped.includes(secret)).toBe(false);
    await provider.close();
  });

  it("refuses to unwrap under another tenant, key or KEK version", async () => {
    const provider = await openLocalRootProvider(dir);
    const wrapped = await provider.wrap(Buffer.alloc(32, 1), context);
    for (const other of [
      { ...context, tenantId: "t2" },
      { ...context, keyId: "docs" },
      { ...context, kekVersion: 2 },
    ]) {
      await expect(provider.unwrap(wrapped, other, provider.currentKeyId)).rejects.toMatchObject({ reason: "INTERNAL" });
    }
    await provider.close();
  });

  it("refuses to start on a key file that group or others can read", async () => {
    await (await openLocalRootProvider(dir)).close();
    await chmod(join(dir, MASTER_KEY_FILE), 0o644);
    await expect(openLocalRootProvider(dir)).rejects.toBeInstanceOf(MasterKeyFileError);
    await expect(openLocalRootProvider(dir)).rejects.toThrow(/chmod 600/);
  });

  it("refuses a key file of the wrong length", async () => {
    await writeFile(join(dir, MASTER_KEY_FILE), Buffer.alloc(16), { mode: 0o600 });
    await expect(openLocalRootProvider(dir)).rejects.toThrow(/exactly 32 bytes/);
  });

  it("answers PROVIDER_UNAVAILABLE for a KEK wrapped by a master key it does not hold", async () => {
    const provider = await openLocalRootProvider(dir);
    const wrapped = await provider.wrap(Buffer.alloc(32, 1), context);
    await expect(provider.unwrap(wrapped, context, "local-0000000000000000")).rejects.toMatchObject({ reason: "PROVIDER_UNAVAILABLE" });
    await provider.close();
  });

  describe("versions (master-key rotation)", () => {
    it("createKeyVersion writes master.v2.key (mode 0600, 32 bytes) without making it current; useKeyVersion then switches wrapping to it, and KEKs wrapped under either version unwrap", async () => {
      const provider = await openLocalRootProvider(dir);
      const v1 = provider.currentKeyId;
      const underV1 = await provider.wrap(Buffer.alloc(32, 1), context);
      const v2 = await provider.createKeyVersion();
      expect(v2).not.toBe(v1);
      expect(v2).toMatch(/^local-[0-9a-f]{16}$/);
      const info = await stat(join(dir, masterKeyFileName(2)));
      expect(masterKeyFileName(2)).toBe("master.v2.key");
      expect(info.mode & 0o777).toBe(0o600);
      expect(info.size).toBe(32);
      expect(provider.currentKeyId).toBe(v1);
      expect(provider.keyIds).toEqual([v1, v2]);

      await provider.useKeyVersion(v2);
      expect(provider.currentKeyId).toBe(v2);
      const underV2 = await provider.wrap(Buffer.alloc(32, 2), context);
      expect(await provider.unwrap(underV1, context, v1)).toEqual(Buffer.alloc(32, 1));
      expect(await provider.unwrap(underV2, context, v2)).toEqual(Buffer.alloc(32, 2));
      // Each wrapped form opens only under the version that made it.
      await expect(provider.unwrap(underV2, context, v1)).rejects.toMatchObject({ reason: "INTERNAL" });
      await provider.close();
    });

    it("after a restart holds every version, and the newest file is current until told otherwise", async () => {
      const first = await openLocalRootProvider(dir);
      const v1 = first.currentKeyId;
      const v2 = await first.createKeyVersion();
      const v3 = await first.createKeyVersion();
      await first.close();
      const second = await openLocalRootProvider(dir);
      expect(second.keyIds).toEqual([v1, v2, v3]);
      expect(second.currentKeyId).toBe(v3);
      await second.useKeyVersion(v2);
      expect(second.currentKeyId).toBe(v2);
      await second.close();
    });

    it("finds a version another process wrote into a shared directory when asked for it", async () => {
      const a = await openLocalRootProvider(dir);
      const b = await openLocalRootProvider(dir);
      const v2 = await a.createKeyVersion();
      await a.useKeyVersion(v2);
      const wrapped = await a.wrap(Buffer.alloc(32, 9), context);
      expect(b.keyIds).toHaveLength(1);
      expect(await b.unwrap(wrapped, context, v2)).toEqual(Buffer.alloc(32, 9));
      await b.useKeyVersion(v2);
      expect(b.currentKeyId).toBe(v2);
      await a.close();
      await b.close();
    });

    it("refuses to start on a version file that group or others can read, and useKeyVersion refuses a version it does not hold", async () => {
      const provider = await openLocalRootProvider(dir);
      await expect(provider.useKeyVersion("local-0000000000000000")).rejects.toMatchObject({ reason: "PROVIDER_UNAVAILABLE" });
      await provider.createKeyVersion();
      await provider.close();
      await chmod(join(dir, masterKeyFileName(2)), 0o640);
      await expect(openLocalRootProvider(dir)).rejects.toThrow(/master\.v2\.key has mode 640.*chmod 600/);
    });
  });
});
