import { createHmac } from "node:crypto";
import { constantTimeEqual, wipe } from "./secure-buffer.js";

/**
 * The DEK reference: the opaque blob GenerateDataKey hands out and Decrypt
 * takes back. Format version 1:
 *
 *   0x01 | keyUid (16) | dekVersion (uint32 BE) | tenantIdLen (u8) | tenantId (ASCII)
 *        | keyIdLen (u8) | keyId (ASCII) | tag (16)
 *
 *   tag    = HMAC-SHA-256(macKey, everything before the tag)[0..16]
 *   macKey = HMAC-SHA-256(key = DEK plaintext, "matih-kms/v1/dek-reference")
 *
 * The tag is keyed by the DEK itself: the server can only check it after
 * unwrapping the DEK the reference names, so no extra server secret exists
 * to manage or rotate, and a reference cannot be re-pointed at another
 * tenant, key or version without the DEK. The leading version byte lets the
 * format change later without guessing.
 */
export const DEK_REFERENCE_FORMAT_VERSION = 1;
/** Refused before parsing, so hostile input costs nothing (a v1 reference is at most 167 bytes). */
export const DEK_REFERENCE_MAX_BYTES = 512;
export const DEK_REFERENCE_KEY_UID_BYTES = 16;
export const DEK_REFERENCE_TAG_BYTES = 16;
/** DEKs are AES-256; insisting on the size catches arguments passed in the wrong order. */
export const DEK_REFERENCE_DEK_BYTES = 32;

const MAC_KEY_INFO = Buffer.from("matih-kms/v1/dek-reference", "ascii");
const MAX_DEK_VERSION = 0xffff_ffff;
// Same rule as domain/identifiers.ts (1-64 of [A-Za-z0-9_-], leading letter or digit);
// repeated here so the crypto module depends on nothing but node:crypto.
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export interface DekReferenceFields {
  tenantId: string;
  keyId: string;
  keyUid: Uint8Array;
  dekVersion: number;
}

export type ParsedDekReference = DekReferenceFields & {
  /** Everything the tag covers. */
  body: Buffer;
  tag: Buffer;
};

/** A reference that is not a well-formed v1 reference. The message says what is wrong, never echoes content. */
export class ReferenceFormatError extends Error {
  override readonly name = "ReferenceFormatError";
}

function isValidId(value: string): boolean {
  return ID_PATTERN.test(value);
}

function checkDek(dekPlaintext: Uint8Array): void {
  if (dekPlaintext.byteLength !== DEK_REFERENCE_DEK_BYTES) {
    throw new RangeError(`DEK must be ${DEK_REFERENCE_DEK_BYTES} bytes`);
  }
}

function computeTag(body: Uint8Array, dekPlaintext: Uint8Array): Buffer {
  checkDek(dekPlaintext);
  const macKey = createHmac("sha256", dekPlaintext).update(MAC_KEY_INFO).digest();
  const mac = createHmac("sha256", macKey).update(body).digest();
  const tag = Buffer.alloc(DEK_REFERENCE_TAG_BYTES);
  mac.copy(tag, 0, 0, DEK_REFERENCE_TAG_BYTES);
  wipe(macKey, mac);
  return tag;
}

/** Builds a v1 reference for `fields`, tagged with the DEK it names. */
export function encodeDekReference(fields: DekReferenceFields, dekPlaintext: Uint8Array): Buffer {
  const { tenantId, keyId, keyUid, dekVersion } = fields;
  if (!isValidId(tenantId)) throw new RangeError("tenant id is not a valid id");
  if (!isValidId(keyId)) throw new RangeError("key id is not a valid id");
  if (keyUid.byteLength !== DEK_REFERENCE_KEY_UID_BYTES) {
    throw new RangeError(`key uid must be ${DEK_REFERENCE_KEY_UID_BYTES} bytes`);
  }
  if (!Number.isInteger(dekVersion) || dekVersion < 1 || dekVersion > MAX_DEK_VERSION) {
    throw new RangeError("dek version must be an integer from 1 to 2^32-1");
  }

  const body = Buffer.alloc(1 + DEK_REFERENCE_KEY_UID_BYTES + 4 + 1 + tenantId.length + 1 + keyId.length);
  let offset = body.writeUInt8(DEK_REFERENCE_FORMAT_VERSION, 0);
  body.set(keyUid, offset);
  offset += DEK_REFERENCE_KEY_UID_BYTES;
  offset = body.writeUInt32BE(dekVersion, offset);
  offset = body.writeUInt8(tenantId.length, offset);
  offset += body.write(tenantId, offset, "ascii");
  offset = body.writeUInt8(keyId.length, offset);
  body.write(keyId, offset, "ascii");

  return Buffer.concat([body, computeTag(body, dekPlaintext)]);
}

/**
 * Parses a reference without checking its tag (that needs the DEK, which the
 * caller unwraps using the fields returned here). Throws ReferenceFormatError
 * for anything that is not exactly one well-formed v1 reference.
 */
export function parseDekReference(bytes: Uint8Array): ParsedDekReference {
  if (bytes.byteLength > DEK_REFERENCE_MAX_BYTES) {
    throw new ReferenceFormatError(`reference is larger than ${DEK_REFERENCE_MAX_BYTES} bytes`);
  }
  if (bytes.byteLength === 0) throw new ReferenceFormatError("reference is empty");
  // Own copy: the result must not change if the caller reuses its buffer.
  const buf = Buffer.from(bytes);
  let offset = 0;
  const take = (n: number): Buffer => {
    if (offset + n > buf.length) throw new ReferenceFormatError("truncated");
    const part = buf.subarray(offset, offset + n);
    offset += n;
    return part;
  };
  const takeId = (what: string): string => {
    const length = take(1).readUInt8(0);
    // latin1 maps each byte to one char; the ASCII-only pattern then refuses any byte >= 0x80.
    const id = take(length).toString("latin1");
    if (!isValidId(id)) throw new ReferenceFormatError(`${what} is not a valid id`);
    return id;
  };

  const version = take(1).readUInt8(0);
  if (version !== DEK_REFERENCE_FORMAT_VERSION) throw new ReferenceFormatError(`unknown format version ${version}`);
  const keyUid = take(DEK_REFERENCE_KEY_UID_BYTES);
  const dekVersion = take(4).readUInt32BE(0);
  if (dekVersion === 0) throw new ReferenceFormatError("dek version 0 is not valid (versions start at 1)");
  const tenantId = takeId("tenant id");
  const keyId = takeId("key id");

  const remaining = buf.length - offset;
  if (remaining < DEK_REFERENCE_TAG_BYTES) throw new ReferenceFormatError("truncated");
  if (remaining > DEK_REFERENCE_TAG_BYTES) throw new ReferenceFormatError("trailing bytes");

  return { tenantId, keyId, keyUid, dekVersion, body: buf.subarray(0, offset), tag: buf.subarray(offset) };
}

/** True when the reference's tag was made with this DEK. Constant-time in the tag. */
export function verifyDekReferenceTag(parsed: Pick<ParsedDekReference, "body" | "tag">, dekPlaintext: Uint8Array): boolean {
  const expected = computeTag(parsed.body, dekPlaintext);
  try {
    return constantTimeEqual(expected, parsed.tag);
  } finally {
    wipe(expected);
  }
}
