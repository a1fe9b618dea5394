/**
 * The `local` root provider: an AES-256 master key in a file of the data
 * directory. The embedded default for development and single machines; in
 * production the master key belongs in an HSM or a cloud KMS.
 *
 * The file is created on first start with mode 0600, and start-up refuses a
 * key file that group or others can read: a master key that leaked through
 * file permissions cannot be trusted.
 */
import { createHash } from "node:crypto";
import { mkdir, open, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { openAesGcm, sealAesGcm } from "../../crypto/aes-gcm.js";
import { CryptoFailure } from "../../crypto/crypto-failure.js";
import { generateAes256Key } from "../../crypto/random.js";
import { wipe } from "../../crypto/secure-buffer.js";
import { KmsError } from "../../domain/kms-error.js";
import { encodeKekWrapContext, type KekWrapContext, type RootKeyProvider } from "../../domain/root-key-provider.js";

export const MASTER_KEY_FILE = "master.key";
const MASTER_KEY_BYTES = 32;

export class MasterKeyFileError extends Error {
  override readonly name = "MasterKeyFileError";
}

export async function openLocalRootProvider(dataDir: string): Promise<RootKeyProvider> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, MASTER_KEY_FILE);
  await createKeyFileIfAbsent(path);
  const masterKey = await readKeyFile(path);
  const keyId = `local-${createHash("sha256").update("matih-kms/v1/local-key-id").update(masterKey).digest("hex").slice(0, 16)}`;

  return {
    name: "local",
    currentKeyId: keyId,
    async wrap(plaintext: Uint8Array, context: KekWrapContext): Promise<Buffer> {
      return sealAesGcm(masterKey, plaintext, encodeKekWrapContext(context));
    },
    async unwrap(wrapped: Uint8Array, context: KekWrapContext, rootKeyId: string): Promise<Buffer> {
      if (rootKeyId !== keyId) {
        throw new KmsError("PROVIDER_UNAVAILABLE", `master key ${rootKeyId} is not held by this server's local provider (it holds ${keyId})`);
      }
      try {
        return openAesGcm(masterKey, wrapped, encodeKekWrapContext(context));
      } catch (error) {
        if (error instanceof CryptoFailure) {
          throw new KmsError("INTERNAL", `KEK version ${context.kekVersion} of key ${context.keyId} failed to unwrap under the master key`, { cause: error });
        }
        throw error;
      }
    },
    async close(): Promise<void> {
      wipe(masterKey);
    },
  };
}

async function createKeyFileIfAbsent(path: string): Promise<void> {
  const material = generateAes256Key();
  try {
    // 'wx' fails if the file exists, so two processes starting at once never overwrite each other's key.
    const handle = await open(path, "wx", 0o600);
    try {
      await handle.writeFile(material);
      await handle.sync();
    } finally {
      await handle.close();
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  } finally {
    wipe(material);
  }
}

async function readKeyFile(path: string): Promise<Buffer> {
  const info = await stat(path);
  if ((info.mode & 0o077) !== 0) {
    throw new MasterKeyFileError(
      `master key file ${path} has mode ${(info.mode & 0o777).toString(8)}: group or others can access it; run chmod 600 on it (and rotate the master key if it may have leaked)`,
    );
  }
  const material = await readFile(path);
  if (material.length !== MASTER_KEY_BYTES) {
    wipe(material);
    throw new MasterKeyFileError(`master key file ${path} must hold exactly ${MASTER_KEY_BYTES} bytes`);
  }
  return material;
}
