/**
 * The `local` root provider: AES-256 master keys in files of the data
 * directory. The embedded default for development and single machines; in
 * production the master key belongs in an HSM or a cloud KMS.
 *
 * Versions: `master.key` is the first version (created on first start);
 * master-key rotation adds `master.v2.key`, `master.v3.key`, ... Each version
 * is named by an id derived from its material (`local-<hash>`), stored beside
 * every KEK it wraps. The provider unwraps under any version it holds and
 * wraps under the current one: the newest file at start-up, or the one the
 * database names current (`useKeyVersion`). Asked for a version it does not
 * hold, it reads the directory again first, so a version another replica
 * sharing the directory wrote is found.
 *
 * Every file is created with mode 0600, and start-up refuses a key file that
 * group or others can read: a master key that leaked through file
 * permissions cannot be trusted.
 */
import { createHash } from "node:crypto";
import { mkdir, open, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { openAesGcm, sealAesGcm } from "../../crypto/aes-gcm.js";
import { CryptoFailure } from "../../crypto/crypto-failure.js";
import { generateAes256Key } from "../../crypto/random.js";
import { wipe } from "../../crypto/secure-buffer.js";
import { KmsError } from "../../domain/kms-error.js";
import { encodeKekWrapContext, type KekWrapContext, type RootKeyProvider } from "../../domain/root-key-provider.js";

export const MASTER_KEY_FILE = "master.key";
const MASTER_KEY_BYTES = 32;
const VERSION_FILE = /^master\.v([1-9][0-9]{0,8})\.key$/;

/** The file of master-key version `version` (1 is `master.key`). */
export function masterKeyFileName(version: number): string {
  return version === 1 ? MASTER_KEY_FILE : `master.v${version}.key`;
}

export class MasterKeyFileError extends Error {
  override readonly name = "MasterKeyFileError";
}

/** The local provider: a RootKeyProvider whose versions can be listed and rotated. */
export interface LocalRootProvider extends RootKeyProvider {
  createKeyVersion(): Promise<string>;
  useKeyVersion(rootKeyId: string): Promise<void>;
  /** The ids of the versions held, oldest first. */
  readonly keyIds: readonly string[];
}

interface KeyVersion {
  readonly version: number;
  readonly id: string;
  readonly material: Buffer;
}

export interface LocalRootProviderOptions {
  /**
   * false opens existing key files only (a previous root provider, which must
   * never mint a key nothing was wrapped under): no master.key is an error.
   */
  readonly createIfMissing?: boolean;
}

export async function openLocalRootProvider(dataDir: string, options: LocalRootProviderOptions = {}): Promise<LocalRootProvider> {
  if (options.createIfMissing === false) {
    await stat(join(dataDir, MASTER_KEY_FILE)).catch((error: unknown) => {
      throw new MasterKeyFileError(`no master key file ${join(dataDir, MASTER_KEY_FILE)} to open (${(error as NodeJS.ErrnoException).code ?? "unreadable"})`);
    });
  } else {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await createKeyFileIfAbsent(join(dataDir, MASTER_KEY_FILE));
  }
  const versions = new Map<string, KeyVersion>();
  let closed = false;

  /** Loads every version file not loaded yet; checks each one's mode and length. */
  const scan = async (): Promise<void> => {
    const numbers = [1];
    for (const name of await readdir(dataDir)) {
      const match = VERSION_FILE.exec(name);
      if (match !== null && Number(match[1]) > 1) numbers.push(Number(match[1]));
    }
    const held = new Set([...versions.values()].map((v) => v.version));
    for (const version of numbers.sort((a, b) => a - b)) {
      if (held.has(version)) continue;
      const material = await readKeyFile(join(dataDir, masterKeyFileName(version)));
      const id = keyIdOf(material);
      if (closed || versions.has(id)) {
        wipe(material);
        continue;
      }
      versions.set(id, { version, id, material });
    }
  };
  const newest = (): KeyVersion => [...versions.values()].reduce((a, b) => (b.version > a.version ? b : a));
  let scanning: Promise<void> | undefined;
  /** One directory scan at a time: concurrent callers share it. */
  const rescan = (): Promise<void> => (scanning ??= scan().finally(() => (scanning = undefined)));

  await scan();
  let current = newest();

  const find = async (rootKeyId: string): Promise<KeyVersion | undefined> => {
    const held = versions.get(rootKeyId);
    if (held !== undefined || closed) return held;
    await rescan();
    return versions.get(rootKeyId);
  };

  return {
    name: "local",
    get currentKeyId() {
      return current.id;
    },
    get keyIds() {
      return [...versions.values()].sort((a, b) => a.version - b.version).map((v) => v.id);
    },
    holdsKey: (rootKeyId: string) => versions.has(rootKeyId),
    async wrap(plaintext: Uint8Array, context: KekWrapContext): Promise<Buffer> {
      return sealAesGcm(current.material, plaintext, encodeKekWrapContext(context));
    },
    async unwrap(wrapped: Uint8Array, context: KekWrapContext, rootKeyId: string): Promise<Buffer> {
      const version = await find(rootKeyId);
      if (version === undefined) {
        throw new KmsError(
          "PROVIDER_UNAVAILABLE",
          `master key ${rootKeyId} is not held by this server's local provider (it holds ${[...versions.keys()].join(", ")})`,
        );
      }
      try {
        return openAesGcm(version.material, wrapped, encodeKekWrapContext(context));
      } catch (error) {
        if (error instanceof CryptoFailure) {
          throw new KmsError("INTERNAL", `KEK version ${context.kekVersion} of key ${context.keyId} failed to unwrap under the master key`, { cause: error });
        }
        throw error;
      }
    },
    async createKeyVersion(): Promise<string> {
      await rescan();
      const next = newest().version + 1;
      await createKeyFile(join(dataDir, masterKeyFileName(next)));
      await syncDirectory(dataDir);
      await rescan();
      const created = [...versions.values()].find((v) => v.version === next);
      if (created === undefined) throw new Error(`master key version ${next} was written but could not be read back`);
      return created.id;
    },
    async useKeyVersion(rootKeyId: string): Promise<void> {
      const version = await find(rootKeyId);
      if (version === undefined) {
        throw new KmsError("PROVIDER_UNAVAILABLE", `master key ${rootKeyId} is not held by this server's local provider; copy its file into the data directory`);
      }
      current = version;
    },
    async close(): Promise<void> {
      closed = true;
      for (const version of versions.values()) wipe(version.material);
      versions.clear();
    },
  };
}

function keyIdOf(material: Buffer): string {
  return `local-${createHash("sha256").update("matih-kms/v1/local-key-id").update(material).digest("hex").slice(0, 16)}`;
}

async function createKeyFileIfAbsent(path: string): Promise<void> {
  try {
    await createKeyFile(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
}

/** Writes 32 random bytes to a new file (mode 0600); fails with EEXIST if it exists. */
async function createKeyFile(path: string): Promise<void> {
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
  } finally {
    wipe(material);
  }
}

/** Makes a new file's directory entry durable. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
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
