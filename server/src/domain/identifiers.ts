import { invalidField } from "./kms-error.js";

/**
 * Tenant and key ids appear in URLs, database rows, log lines and DEK
 * references, so they are restricted to a small, unambiguous alphabet:
 * 1-64 characters of letters, digits, '-' and '_', starting with a letter or
 * digit. Anything else is refused before it reaches storage.
 */
export const ID_MAX_LENGTH = 64;
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
export const ID_RULE = `must be 1-${ID_MAX_LENGTH} characters of letters, digits, '-' or '_', starting with a letter or digit`;

export function isValidId(value: string): boolean {
  return value.length >= 1 && value.length <= ID_MAX_LENGTH && ID_PATTERN.test(value);
}

/** Throws INVALID_FIELD naming `field` unless `value` is a valid id. */
export function requireValidId(field: string, value: string): string {
  if (!isValidId(value)) throw invalidField(field, ID_RULE, { maxLength: String(ID_MAX_LENGTH) });
  return value;
}
