/**
 * Why a ciphertext was refused locally. None of these says more than the
 * kind: an attacker probing with altered ciphertexts learns nothing from the
 * message.
 *
 * - MALFORMED: not a well-formed envelope (unknown format version or content
 *   type, truncated header, a length out of bounds, trailing bytes);
 * - UNEXPECTED_KEY: the header names another tenant or key than the caller
 *   said to expect (checked before any call to the service);
 * - DEK_MISMATCH: the service returned a DEK of another version than the
 *   header names;
 * - COMMITMENT_MISMATCH: the key commitment in the header does not match the
 *   DEK and salt (checked in constant time before anything is decrypted);
 * - AUTHENTICATION_FAILED: AES-GCM refused a tag: a byte was changed, the
 *   context differs from the one used to encrypt, or a chunk of a stream is
 *   out of place (reordered, dropped, duplicated: its nonce names its index);
 * - STREAM_TRUNCATED: a stream ended before its final chunk;
 * - STREAM_EXTENDED: bytes follow the final chunk of a stream;
 * - CONTEXT_INVALID: the caller's encryption context cannot be encoded.
 */
export type EnvelopeErrorKind =
  | "MALFORMED"
  | "UNEXPECTED_KEY"
  | "DEK_MISMATCH"
  | "COMMITMENT_MISMATCH"
  | "AUTHENTICATION_FAILED"
  | "STREAM_TRUNCATED"
  | "STREAM_EXTENDED"
  | "CONTEXT_INVALID";

export class EnvelopeError extends Error {
  override readonly name = "EnvelopeError";
  readonly kind: EnvelopeErrorKind;

  constructor(kind: EnvelopeErrorKind, message: string) {
    super(`${kind}: ${message}`);
    this.kind = kind;
  }
}

export function isEnvelopeError(error: unknown, kind?: EnvelopeErrorKind): error is EnvelopeError {
  return error instanceof EnvelopeError && (kind === undefined || error.kind === kind);
}
