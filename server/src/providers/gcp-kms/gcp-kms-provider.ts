/**
 * `gcp-kms`: the key is a Cloud KMS CryptoKey of purpose ENCRYPT_DECRYPT
 * (GOOGLE_SYMMETRIC_ENCRYPTION; software or HSM protection level). Wrap is
 * `Encrypt` on the CryptoKey (Cloud KMS picks its primary version and records
 * it in the ciphertext), unwrap is `Decrypt` on the same CryptoKey; the
 * context is the additionalAuthenticatedData.
 *
 * Integrity both ways, as Google recommends: every request carries CRC32C
 * checksums of its data fields (the service checks them and says so in
 * `verified_*`), and every response's checksum is checked here before its
 * data is used. A mismatch is corruption in transit: `unavailable`.
 *
 * Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS,
 * workload identity on GKE, the metadata server) unless a key file is named.
 * `tls` serves local endpoints only: "insecure" (plaintext gRPC) or a CA to
 * trust; both skip Google authentication, which a local server does not need.
 */
import { KeyManagementServiceClient } from "@google-cloud/kms";
import {
  checkWrapPlaintext,
  encodeWrapContext,
  KeyWrappingError,
  type KeyWrappingProvider,
  type WrapContext,
  type WrapFailure,
} from "../key-wrapping-provider.js";
import { crc32c } from "./crc32c.js";
import { classifyGcpKmsError } from "./gcp-kms-failure.js";

type ClientOptions = NonNullable<ConstructorParameters<typeof KeyManagementServiceClient>[0]>;
/** The google-gax CallOptions fields used here (the SDK's overloads hide the type). */
interface CallOptions {
  timeout: number;
  maxRetries: number;
}

export interface GcpKmsProviderOptions {
  /** projects/{p}/locations/{l}/keyRings/{r}/cryptoKeys/{k} */
  readonly keyName: string;
  /** Host of the API, e.g. a regional or private endpoint; default cloudkms.googleapis.com. */
  readonly apiEndpoint?: string;
  readonly port?: number;
  /** Local endpoints only: plaintext gRPC, or TLS trusting this CA (PEM). Skips Google authentication. */
  readonly tls?: "insecure" | { readonly caPem: string };
  /** A service-account key file; default Application Default Credentials. */
  readonly keyFilename?: string;
  /** Deadline per call, retries included. Default 10 s. */
  readonly timeoutMs?: number;
  /** Retries of UNAVAILABLE / DEADLINE_EXCEEDED. Default 2. */
  readonly maxRetries?: number;
  /** A client to share between several keys; not closed by close(). */
  readonly client?: KeyManagementServiceClient;
}

const KEY_NAME = /^projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+$/;

export function isGcpCryptoKeyName(name: string): boolean {
  return KEY_NAME.test(name);
}

export async function createGcpKmsClient(options: Omit<GcpKmsProviderOptions, "keyName" | "client">): Promise<KeyManagementServiceClient> {
  const clientOptions: ClientOptions = {
    ...(options.apiEndpoint === undefined ? {} : { apiEndpoint: options.apiEndpoint }),
    ...(options.port === undefined ? {} : { port: options.port }),
    ...(options.keyFilename === undefined ? {} : { keyFilename: options.keyFilename }),
  };
  if (options.tls !== undefined) {
    // google-gax's own gRPC library (a dependency of @google-cloud/kms), loaded only for local endpoints.
    const grpc = await import("@grpc/grpc-js");
    // A local endpoint has no Google credentials: name the universe so the client does not probe for them (metadata server).
    clientOptions.universeDomain = "googleapis.com";
    clientOptions.sslCreds = options.tls === "insecure" ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(Buffer.from(options.tls.caPem));
  }
  return new KeyManagementServiceClient(clientOptions);
}

export async function openGcpKmsProvider(options: GcpKmsProviderOptions): Promise<KeyWrappingProvider> {
  if (!isGcpCryptoKeyName(options.keyName)) {
    throw new TypeError(`gcp-kms: keyName must be projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}, got ${JSON.stringify(options.keyName)}`);
  }
  const keyRef = options.keyName;
  const client = options.client ?? (await createGcpKmsClient(options));
  const ownsClient = options.client === undefined;
  const callOptions: CallOptions = { timeout: options.timeoutMs ?? 10_000, maxRetries: options.maxRetries ?? 2 };
  const where = { provider: "gcp-kms" as const, keyRef };

  function fail(operation: "wrap" | "unwrap", failure: WrapFailure, message: string, cause?: unknown): KeyWrappingError {
    return new KeyWrappingError(failure, { ...where, operation }, `Cloud KMS ${operation === "wrap" ? "Encrypt" : "Decrypt"} under ${keyRef} failed (${failure}): ${message}`, {
      cause,
    });
  }

  return {
    kind: "gcp-kms",
    keyRef,
    async wrap(plaintext: Uint8Array, context: WrapContext): Promise<Buffer> {
      checkWrapPlaintext(plaintext, where);
      const aad = encodeWrapContext(context);
      let response;
      try {
        [response] = await client.encrypt(
          {
            name: keyRef,
            plaintext,
            additionalAuthenticatedData: aad,
            plaintextCrc32c: { value: crc32c(plaintext) },
            additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
          },
          callOptions,
        );
      } catch (error) {
        throw fail("wrap", classifyGcpKmsError(error, "wrap"), describe(error), error);
      }
      // The service must say it checked both our checksums; otherwise the request may have been altered unseen.
      if (response.verifiedPlaintextCrc32c !== true || response.verifiedAdditionalAuthenticatedDataCrc32c !== true) {
        throw fail("wrap", "unavailable", "the service did not confirm the request's checksums (integrity check failed)");
      }
      const ciphertext = toBuffer(response.ciphertext);
      if (ciphertext === undefined || ciphertext.length === 0) throw fail("wrap", "other", "the response carries no ciphertext");
      if (int64(response.ciphertextCrc32c?.value) !== crc32c(ciphertext)) {
        throw fail("wrap", "unavailable", "the response's ciphertext does not match its checksum (integrity check failed)");
      }
      if (typeof response.name !== "string" || !response.name.startsWith(`${keyRef}/cryptoKeyVersions/`)) {
        throw fail("wrap", "other", `the service encrypted under ${String(response.name)}, not a version of ${keyRef}`);
      }
      return ciphertext;
    },
    async unwrap(wrapped: Uint8Array, context: WrapContext): Promise<Buffer> {
      const aad = encodeWrapContext(context);
      let response;
      try {
        [response] = await client.decrypt(
          {
            name: keyRef,
            ciphertext: wrapped,
            additionalAuthenticatedData: aad,
            ciphertextCrc32c: { value: crc32c(wrapped) },
            additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
          },
          callOptions,
        );
      } catch (error) {
        throw fail("unwrap", classifyGcpKmsError(error, "unwrap"), describe(error), error);
      }
      const plaintext = toBuffer(response.plaintext);
      if (plaintext === undefined || plaintext.length === 0) throw fail("unwrap", "other", "the response carries no plaintext");
      if (int64(response.plaintextCrc32c?.value) !== crc32c(plaintext)) {
        plaintext.fill(0);
        throw fail("unwrap", "unavailable", "the response's plaintext does not match its checksum (integrity check failed)");
      }
      return plaintext;
    },
    async close(): Promise<void> {
      if (ownsClient) await client.close();
    },
  };
}

function toBuffer(value: Uint8Array | string | null | undefined): Buffer | undefined {
  if (value === null || value === undefined) return undefined;
  return typeof value === "string" ? Buffer.from(value, "base64") : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** Int64Value arrives as a number, a decimal string or a Long, depending on the loader's options. */
function int64(value: unknown): number | undefined {
  if (value === null || value === undefined) return undefined;
  const n = Number(typeof value === "object" ? String(value) : value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** The status and message: they name keys and checks, never the data sent. */
function describe(error: unknown): string {
  if (typeof error === "object" && error !== null) {
    const { code, details, message } = error as { code?: unknown; details?: unknown; message?: unknown };
    const text = typeof details === "string" && details !== "" ? details : typeof message === "string" ? message : String(error);
    return typeof code === "number" ? `gRPC ${code}: ${text}` : text;
  }
  return String(error);
}
