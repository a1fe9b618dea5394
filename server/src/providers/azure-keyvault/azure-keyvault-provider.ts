/**
 * `azure-keyvault`: the key is a Key Vault RSA key (RSA-OAEP-256; Standard
 * or Premium vault) or a Managed HSM AES key (A256KW), used through
 * CryptographyClient.wrapKey / unwrapKey.
 *
 * Key Vault's wrapKey takes no associated data, and RSA-OAEP caps what it
 * wraps (446 bytes under RSA-4096) below an RSA-4096 KEK's PKCS#8. So each
 * wrap draws a fresh 256-bit content key, Key Vault wraps that, and the
 * payload is sealed under it with AES-256-GCM whose AAD is the envelope
 * header and the context (decision 0021). Opening needs Key Vault's unwrap of
 * the content key: the master key still never leaves the vault.
 *
 *   envelope = 0x01 | u16 kidLength | kid | u16 wrappedLength | wrappedContentKey | nonce(12) | ciphertext | tag(16)
 *
 * The kid is the versioned key id that wrapped, so unwrapping uses that
 * version after the key rotates in the vault; a kid outside the configured
 * key is refused before any call. Before each wrap the key is read (`get`)
 * to find its current version and refuse a disabled or expired key — Key
 * Vault itself lets public-key operations through on a disabled RSA key, and
 * a KEK wrapped under it would not unwrap until the key is enabled again.
 * Permissions the identity needs: keys get, wrapKey, unwrapKey (the built-in
 * role "Key Vault Crypto Service Encryption User").
 */
import type { Agent } from "node:https";
import { CryptographyClient, KeyClient, parseKeyVaultKeyIdentifier, type KeyVaultKey } from "@azure/keyvault-keys";
import { openAesGcm, sealAesGcm } from "../../crypto/aes-gcm.js";
import { CryptoFailure } from "../../crypto/crypto-failure.js";
import { generateAes256Key } from "../../crypto/random.js";
import { wipe } from "../../crypto/secure-buffer.js";
import {
  checkWrapPlaintext,
  encodeWrapContext,
  KeyWrappingError,
  type KeyWrappingProvider,
  type WrapContext,
  type WrapFailure,
} from "../key-wrapping-provider.js";
import { classifyKeyVaultError } from "./azure-keyvault-failure.js";

type TokenCredential = ConstructorParameters<typeof KeyClient>[1];
type KeyClientOptions = NonNullable<ConstructorParameters<typeof KeyClient>[2]>;

export type KeyVaultWrapAlgorithm = "RSA-OAEP-256" | "A256KW";

export interface AzureKeyVaultProviderOptions {
  /** https://{vault}.vault.azure.net/keys/{name} (follows the key's current version) or .../keys/{name}/{version} (pinned). */
  readonly keyId: string;
  /** Default RSA-OAEP-256; A256KW for a Managed HSM oct-HSM key. */
  readonly algorithm?: KeyVaultWrapAlgorithm;
  /** A TokenCredential, e.g. createEntraCredential(...). */
  readonly credential: TokenCredential;
  /** Retries of throttling, 5xx and connection failures. Default 2. */
  readonly maxRetries?: number;
  /** Deadline per operation, retries included. Default 10 s. */
  readonly timeoutMs?: number;
  /** Node-only HTTPS agent (tests: one trusting a local CA). */
  readonly agent?: Agent;
  /** Key Vault REST api-version; default the SDK's. */
  readonly serviceVersion?: string;
}

const FORMAT = 0x01;
const NONCE_BYTES = 12;

export async function openAzureKeyVaultProvider(options: AzureKeyVaultProviderOptions): Promise<KeyWrappingProvider> {
  const configured = parseKeyId(options.keyId);
  const keyRef = `${configured.vaultUrl}/keys/${configured.name}${configured.version === undefined ? "" : `/${configured.version}`}`;
  const algorithm = options.algorithm ?? "RSA-OAEP-256";
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxRetries = options.maxRetries ?? 2;
  const clientOptions: KeyClientOptions = {
    retryOptions: { maxRetries, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    ...(options.agent === undefined ? {} : { agent: options.agent }),
    ...(options.serviceVersion === undefined ? {} : { serviceVersion: options.serviceVersion }),
  };
  const keyClient = new KeyClient(configured.vaultUrl, options.credential, clientOptions);
  const cryptoClients = new Map<string, CryptographyClient>();
  const where = { provider: "azure-keyvault" as const, keyRef };

  function cryptoClientFor(key: string | KeyVaultKey): CryptographyClient {
    const kid = typeof key === "string" ? key : key.id ?? "";
    let client = cryptoClients.get(kid);
    if (client === undefined) {
      client = new CryptographyClient(key, options.credential, clientOptions);
      cryptoClients.set(kid, client);
    }
    return client;
  }

  function fail(operation: "wrap" | "unwrap", failure: WrapFailure, message: string, cause?: unknown): KeyWrappingError {
    return new KeyWrappingError(failure, { ...where, operation }, `Key Vault ${operation === "wrap" ? "wrapKey" : "unwrapKey"} under ${keyRef} failed (${failure}): ${message}`, {
      cause,
    });
  }

  async function currentKey(): Promise<KeyVaultKey> {
    let key: KeyVaultKey;
    try {
      key = await keyClient.getKey(configured.name, {
        ...(configured.version === undefined ? {} : { version: configured.version }),
        abortSignal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      throw fail("wrap", classifyKeyVaultError(error, "wrap"), describe(error), error);
    }
    const { enabled, notBefore, expiresOn } = key.properties;
    const now = new Date();
    if (enabled !== true) throw fail("wrap", "key-disabled", `key ${String(key.id)} is disabled`);
    if (notBefore !== undefined && now < notBefore) throw fail("wrap", "key-disabled", `key ${String(key.id)} is not valid before ${notBefore.toISOString()}`);
    if (expiresOn !== undefined && now > expiresOn) throw fail("wrap", "key-disabled", `key ${String(key.id)} expired at ${expiresOn.toISOString()}`);
    const kty = String(key.keyType ?? "");
    const fits = algorithm === "A256KW" ? kty === "oct" || kty === "oct-HSM" : kty === "RSA" || kty === "RSA-HSM";
    if (!fits) throw fail("wrap", "other", `key type ${kty} cannot wrap with ${algorithm}`);
    if (key.id === undefined) throw fail("wrap", "other", "the vault returned a key without an id");
    return key;
  }

  return {
    kind: "azure-keyvault",
    keyRef,
    async wrap(plaintext: Uint8Array, context: WrapContext): Promise<Buffer> {
      checkWrapPlaintext(plaintext, where);
      const key = await currentKey();
      const kid = key.id as string;
      const contentKey = generateAes256Key();
      try {
        let wrappedKey: Uint8Array;
        try {
          wrappedKey = (await cryptoClientFor(key).wrapKey(algorithm, contentKey, { abortSignal: AbortSignal.timeout(timeoutMs) })).result;
        } catch (error) {
          throw fail("wrap", classifyKeyVaultError(error, "wrap"), describe(error), error);
        }
        const header = encodeHeader(kid, wrappedKey);
        return Buffer.concat([header, sealAesGcm(contentKey, plaintext, Buffer.concat([header, encodeWrapContext(context)]))]);
      } finally {
        wipe(contentKey);
      }
    },
    async unwrap(wrapped: Uint8Array, context: WrapContext): Promise<Buffer> {
      const envelope = decodeEnvelope(wrapped);
      if (envelope === undefined) throw fail("unwrap", "invalid-ciphertext", "the blob is not a Key Vault envelope");
      const used = tryParseKeyId(envelope.kid);
      if (
        used === undefined ||
        used.vaultUrl !== configured.vaultUrl ||
        used.name !== configured.name ||
        used.version === undefined ||
        (configured.version !== undefined && used.version !== configured.version)
      ) {
        throw fail("unwrap", "invalid-ciphertext", `the blob was wrapped under ${envelope.kid}, not under ${keyRef}`);
      }
      let contentKey: Uint8Array;
      try {
        contentKey = (await cryptoClientFor(envelope.kid).unwrapKey(algorithm, envelope.wrappedKey, { abortSignal: AbortSignal.timeout(timeoutMs) })).result;
      } catch (error) {
        throw fail("unwrap", classifyKeyVaultError(error, "unwrap"), describe(error), error);
      }
      try {
        return openAesGcm(contentKey, envelope.sealed, Buffer.concat([envelope.header, encodeWrapContext(context)]));
      } catch (error) {
        if (error instanceof CryptoFailure) throw fail("unwrap", "invalid-ciphertext", "the payload does not open under its content key and this context", error);
        throw error;
      } finally {
        wipe(contentKey);
      }
    },
    async close(): Promise<void> {
      cryptoClients.clear();
    },
  };
}

interface ParsedKeyId {
  readonly vaultUrl: string;
  readonly name: string;
  readonly version: string | undefined;
}

function tryParseKeyId(keyId: string): ParsedKeyId | undefined {
  try {
    const url = new URL(keyId);
    if (url.protocol !== "https:" || url.search !== "" || url.hash !== "" || !/^\/keys\/[^/]+(\/[^/]+)?\/?$/.test(url.pathname)) return undefined;
    const parsed = parseKeyVaultKeyIdentifier(keyId);
    if (parsed.name === "" || parsed.vaultUrl === "") return undefined;
    return { vaultUrl: parsed.vaultUrl.replace(/\/+$/, ""), name: parsed.name, version: parsed.version === "" ? undefined : parsed.version };
  } catch {
    return undefined;
  }
}

function parseKeyId(keyId: string): ParsedKeyId {
  const parsed = tryParseKeyId(keyId);
  if (parsed === undefined) throw new TypeError(`azure-keyvault: keyId must be https://{vault}/keys/{name}[/{version}], got ${JSON.stringify(keyId)}`);
  return parsed;
}

function encodeHeader(kid: string, wrappedKey: Uint8Array): Buffer {
  const kidBytes = Buffer.from(kid, "utf8");
  if (kidBytes.length > 0xffff || wrappedKey.byteLength > 0xffff) throw new RangeError("key id or wrapped key too long for the envelope");
  const header = Buffer.alloc(1 + 2 + kidBytes.length + 2 + wrappedKey.byteLength);
  let at = header.writeUInt8(FORMAT, 0);
  at = header.writeUInt16BE(kidBytes.length, at);
  at += kidBytes.copy(header, at);
  at = header.writeUInt16BE(wrappedKey.byteLength, at);
  header.set(wrappedKey, at);
  return header;
}

function decodeEnvelope(data: Uint8Array): { header: Buffer; kid: string; wrappedKey: Buffer; sealed: Buffer } | undefined {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buffer.length < 5 || buffer[0] !== FORMAT) return undefined;
  const kidLength = buffer.readUInt16BE(1);
  const wrappedAt = 3 + kidLength;
  if (buffer.length < wrappedAt + 2) return undefined;
  const wrappedLength = buffer.readUInt16BE(wrappedAt);
  const sealedAt = wrappedAt + 2 + wrappedLength;
  if (buffer.length < sealedAt + NONCE_BYTES + 16) return undefined;
  return {
    header: buffer.subarray(0, sealedAt),
    kid: buffer.subarray(3, wrappedAt).toString("utf8"),
    wrappedKey: buffer.subarray(wrappedAt + 2, sealedAt),
    sealed: buffer.subarray(sealedAt),
  };
}

/** Status, service error code and message: they name keys and permissions, never the data sent. */
function describe(error: unknown): string {
  if (typeof error === "object" && error !== null) {
    const { statusCode, code, message } = error as { statusCode?: unknown; code?: unknown; message?: unknown };
    const parts = [typeof statusCode === "number" ? `HTTP ${statusCode}` : undefined, typeof code === "string" ? code : undefined].filter((p) => p !== undefined);
    const text = typeof message === "string" ? message.split("\n")[0] : String(error);
    return parts.length > 0 ? `${parts.join(" ")}: ${text}` : String(text);
  }
  return String(error);
}
