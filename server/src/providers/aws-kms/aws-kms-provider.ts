/**
 * `aws-kms`: the key is a symmetric KMS key (SYMMETRIC_DEFAULT, AES-256-GCM
 * inside AWS's HSMs). Wrap is `Encrypt`, unwrap is `Decrypt`, both naming the
 * key ARN and carrying the context as the EncryptionContext, which AWS binds
 * as AAD and records in CloudTrail. `Decrypt` names the key too, so a blob
 * from another key is refused by AWS (IncorrectKeyException) rather than
 * decrypted under whatever key it names.
 *
 * Credentials: the SDK's default chain (environment, web identity / IRSA,
 * ECS and EC2 instance roles, shared files) unless given explicitly. The
 * endpoint is configurable (VPC endpoints, FIPS endpoints, local servers).
 */
import { DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient } from "@aws-sdk/client-kms";
import {
  checkWrapPlaintext,
  KeyWrappingError,
  wrapContextFields,
  type KeyWrappingProvider,
  type WrapContext,
} from "../key-wrapping-provider.js";
import { classifyAwsKmsError } from "./aws-kms-failure.js";

export interface AwsKmsProviderOptions {
  /**
   * The key: a key ARN (preferred), or a key id, alias name (`alias/...`) or
   * alias ARN, which is resolved to the key ARN once with DescribeKey when the
   * provider opens, so an alias later re-pointed never changes which key
   * unwraps existing blobs.
   */
  readonly keyId: string;
  readonly region: string;
  /** e.g. `https://kms-fips.us-east-1.amazonaws.com`, a VPC endpoint, or a local server. */
  readonly endpoint?: string;
  /** Static credentials; without them the SDK's default credential chain is used. */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /** Attempts per call, including the first (SDK standard retry). Default 3. */
  readonly maxAttempts?: number;
  /** Per-attempt limits. Defaults: connect 3 s, request 10 s. */
  readonly connectTimeoutMs?: number;
  readonly requestTimeoutMs?: number;
  /** A client to share between several keys (one per account and region); not destroyed by close(). */
  readonly client?: KMSClient;
}

const ALGORITHM = "SYMMETRIC_DEFAULT";

export function isAwsKmsKeyArn(keyId: string): boolean {
  return /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/.test(keyId);
}

export function createAwsKmsClient(options: Omit<AwsKmsProviderOptions, "keyId" | "client">): KMSClient {
  return new KMSClient({
    region: options.region,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: { ...options.credentials } }),
    maxAttempts: options.maxAttempts ?? 3,
    requestHandler: {
      connectionTimeout: options.connectTimeoutMs ?? 3_000,
      requestTimeout: options.requestTimeoutMs ?? 10_000,
    },
  });
}

export async function openAwsKmsProvider(options: AwsKmsProviderOptions): Promise<KeyWrappingProvider> {
  const client = options.client ?? createAwsKmsClient(options);
  const ownsClient = options.client === undefined;
  let keyRef = options.keyId;
  if (!isAwsKmsKeyArn(options.keyId)) {
    try {
      const described = await client.send(new DescribeKeyCommand({ KeyId: options.keyId }));
      const arn = described.KeyMetadata?.Arn;
      if (arn === undefined || !isAwsKmsKeyArn(arn)) throw new Error("DescribeKey returned no key ARN");
      keyRef = arn;
    } catch (error) {
      if (ownsClient) client.destroy();
      const failure = classifyAwsKmsError(error);
      throw new KeyWrappingError(
        failure,
        { provider: "aws-kms", keyRef: options.keyId, operation: "wrap" },
        `AWS KMS key ${options.keyId} could not be resolved to a key ARN with DescribeKey (${failure}): ${describe(error)}; configure the key ARN to skip this look-up`,
        { cause: error },
      );
    }
  }
  const where = { provider: "aws-kms" as const, keyRef };

  function fail(operation: "wrap" | "unwrap", error: unknown): KeyWrappingError {
    const failure = classifyAwsKmsError(error);
    return new KeyWrappingError(failure, { ...where, operation }, `AWS KMS ${operation === "wrap" ? "Encrypt" : "Decrypt"} under ${keyRef} failed (${failure}): ${describe(error)}`, {
      cause: error,
    });
  }

  return {
    kind: "aws-kms",
    keyRef,
    async wrap(plaintext: Uint8Array, context: WrapContext): Promise<Buffer> {
      checkWrapPlaintext(plaintext, where);
      let response;
      try {
        response = await client.send(
          new EncryptCommand({ KeyId: keyRef, Plaintext: plaintext, EncryptionContext: wrapContextFields(context), EncryptionAlgorithm: ALGORITHM }),
        );
      } catch (error) {
        throw fail("wrap", error);
      }
      if (response.CiphertextBlob === undefined || response.CiphertextBlob.byteLength === 0) {
        throw new KeyWrappingError("other", { ...where, operation: "wrap" }, "AWS KMS Encrypt returned no ciphertext");
      }
      if (response.KeyId !== keyRef) {
        throw new KeyWrappingError("other", { ...where, operation: "wrap" }, `AWS KMS Encrypt used key ${String(response.KeyId)}, not ${keyRef}`);
      }
      return Buffer.from(response.CiphertextBlob);
    },
    async unwrap(wrapped: Uint8Array, context: WrapContext): Promise<Buffer> {
      let response;
      try {
        response = await client.send(
          new DecryptCommand({ KeyId: keyRef, CiphertextBlob: wrapped, EncryptionContext: wrapContextFields(context), EncryptionAlgorithm: ALGORITHM }),
        );
      } catch (error) {
        throw fail("unwrap", error);
      }
      const plaintext = response.Plaintext;
      if (plaintext === undefined) throw new KeyWrappingError("other", { ...where, operation: "unwrap" }, "AWS KMS Decrypt returned no plaintext");
      const result = Buffer.from(plaintext);
      plaintext.fill(0);
      if (response.KeyId !== keyRef) {
        result.fill(0);
        throw new KeyWrappingError("invalid-ciphertext", { ...where, operation: "unwrap" }, `AWS KMS Decrypt used key ${String(response.KeyId)}, not ${keyRef}`);
      }
      return result;
    },
    async close(): Promise<void> {
      if (ownsClient) client.destroy();
    },
  };
}

/** The SDK error's name and message: they name keys and operations, never the data sent. */
function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
