import { timingSafeEqual } from "node:crypto";

/**
 * Overwrites each buffer with zeros so key material does not linger in memory
 * longer than needed. Best effort: the GC may already have copied it, and
 * OpenSSL keeps its own copies inside contexts, but it shortens the window.
 * `undefined` is accepted so callers can wipe in `finally` blocks without
 * checking what got allocated.
 */
export function wipe(...buffers: Array<Uint8Array | undefined>): void {
  for (const buffer of buffers) buffer?.fill(0);
}

/**
 * Compares two byte strings in time that depends only on their lengths, never
 * on where they differ. Lengths are not secret (tags, MACs have fixed sizes),
 * but a length mismatch still does a full comparison of `a` against itself so
 * the call costs the same as a mismatch of equal length.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}
