/**
 * The comparison: the AWS Encryption SDK for JavaScript with a raw AES
 * keyring behind its caching materials manager, as its documentation sets it
 * up for data-key caching. Two algorithm suites: the SDK's default (key
 * commitment and an ECDSA P-384 signature per message) and the committing
 * suite without a signature (closest to the matih envelope, which has no
 * signature).
 */
import { randomBytes } from "node:crypto";
import {
  AlgorithmSuiteIdentifier,
  buildClient,
  CommitmentPolicy,
  getLocalCryptographicMaterialsCache,
  NodeCachingMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from "@aws-crypto/client-node";

export type AwsSuite = "default (commit + ECDSA P-384 signature)" | "committing, no signature";

export interface AwsBaseline {
  readonly suite: AwsSuite;
  encrypt(plaintext: Buffer, context: Record<string, string>): Promise<Buffer>;
  decrypt(ciphertext: Buffer): Promise<Buffer>;
}

export function createAwsBaseline(suite: AwsSuite): AwsBaseline {
  const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
  const keyring = new RawAesKeyringNode({
    keyName: "bench-key",
    keyNamespace: "matih-bench",
    unencryptedMasterKey: randomBytes(32),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  });
  const cmm = new NodeCachingMaterialsManager({
    backingMaterials: keyring,
    cache: getLocalCryptographicMaterialsCache(1_000),
    maxAge: 5 * 60_000,
    maxMessagesEncrypted: 2 ** 32,
    maxBytesEncrypted: 2 ** 50,
  });
  const suiteId = suite === "committing, no signature" ? AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY : undefined;
  return {
    suite,
    async encrypt(plaintext, encryptionContext) {
      const { result } = await encrypt(cmm, plaintext, { encryptionContext, plaintextLength: plaintext.length, ...(suiteId === undefined ? {} : { suiteId }) });
      return result;
    },
    async decrypt(ciphertext) {
      const { plaintext } = await decrypt(cmm, ciphertext);
      return plaintext;
    },
  };
}
