/**
 * The cursor of a key event: what a subscriber passes back to resume after a
 * reconnect. On the wire it is opaque — base64url (no padding) of a format
 * byte and the event id (u64 big-endian) — so the numbering can change later
 * (a new format byte) without breaking clients, and a client cannot mistake
 * it for a count or a time.
 */
import { KmsError } from "../domain/kms-error.js";

const FORMAT_V1 = 0x01;
const V1_BYTES = 9;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function encodeEventCursor(eventId: number): string {
  if (!Number.isSafeInteger(eventId) || eventId < 0) throw new RangeError(`not an event id: ${eventId}`);
  const bytes = Buffer.alloc(V1_BYTES);
  bytes[0] = FORMAT_V1;
  bytes.writeBigUInt64BE(BigInt(eventId), 1);
  return bytes.toString("base64url");
}

/**
 * The event id a cursor names. Anything this server did not issue — not
 * base64url, not canonical, an unknown format byte, an id out of range — is
 * INVALID_FIELD naming `field`.
 */
export function decodeEventCursor(cursor: string, field = "after_cursor"): number {
  const refuse = (): never => {
    throw new KmsError("INVALID_FIELD", `${field}: not a cursor issued by WatchKeyEvents; pass the cursor of the last event received, or nothing to start from now`, {
      field,
    });
  };
  if (cursor.length > 64 || !BASE64URL.test(cursor)) return refuse();
  const bytes = Buffer.from(cursor, "base64url");
  // Canonical form only: one spelling per cursor (no padding, no stray bits).
  if (bytes.length !== V1_BYTES || bytes[0] !== FORMAT_V1 || bytes.toString("base64url") !== cursor) return refuse();
  const eventId = bytes.readBigUInt64BE(1);
  if (eventId > BigInt(Number.MAX_SAFE_INTEGER)) return refuse();
  return Number(eventId);
}
