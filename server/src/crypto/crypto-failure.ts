/**
 * The one error the crypto primitives throw when an operation fails.
 *
 * Messages are a closed set of fixed strings, enforced by the type: errors
 * travel to logs and callers, so nothing computed from keys, plaintext or
 * ciphertext can ever be put into one. The underlying OpenSSL error is
 * deliberately not attached as `cause`: for RSA-OAEP its text distinguishes
 * padding faults, which is exactly the oracle Manger's attack needs.
 */
export type CryptoFailureMessage =
  | "authentication failed"
  | "decryption failed"
  | "encryption failed"
  | "input too short"
  | "plaintext too long"
  | "invalid key"
  | "invalid nonce"
  | "invalid tag length";

export class CryptoFailure extends Error {
  override readonly name = "CryptoFailure";
  declare readonly message: CryptoFailureMessage;

  constructor(message: CryptoFailureMessage) {
    super(message);
  }
}
