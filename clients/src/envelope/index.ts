export { encodeContext, type EncryptionContext } from "./canonical-context.js";
export {
  createEnvelopeEncryption,
  type EnvelopeCacheOptions,
  type EnvelopeEncryption,
  type EnvelopeEncryptionOptions,
  type EnvelopeKms,
  type ExpectedKey,
} from "./envelope-encryption.js";
export {
  DEFAULT_CHUNK_SIZE,
  DEK_VERSION_OFFSET,
  describeEnvelope,
  ENVELOPE_FORMAT_VERSION,
  MAX_CHUNK_SIZE,
  type ContentType,
} from "./envelope-format.js";
export { EnvelopeError, isEnvelopeError, type EnvelopeErrorKind } from "../errors/envelope-error.js";
