import { EnvelopeError } from "../errors/envelope-error.js";

/**
 * The caller's encryption context: names and values that are not secret and
 * not stored in the ciphertext, but must be presented again, unchanged, to
 * decrypt it (say `{ table: "customers", column: "email", row: "42" }`).
 * Binding them stops a ciphertext from being moved to another row or column.
 */
export type EncryptionContext = Readonly<Record<string, string>>;

/** Most pairs one context may hold. */
export const MAX_CONTEXT_PAIRS = 0xffff;
/** Longest name or value, in UTF-8 bytes. */
export const MAX_CONTEXT_ELEMENT_BYTES = 0xffff;

const EMPTY_CONTEXT = Buffer.from([0, 0]);

/**
 * The canonical encoding of a context (docs/envelope-format.md, "Encryption
 * context"): the pair count (u16 BE), then each pair in ascending bytewise
 * order of the UTF-8 name: name length (u16 BE), name, value length (u16 BE),
 * value. Equal contexts always encode to equal bytes, and distinct contexts
 * to distinct bytes (every element is length-prefixed).
 *
 * Refused (CONTEXT_INVALID): a value that is not a string, a name that is
 * empty, a name or value that is not well-formed Unicode (a lone surrogate
 * would otherwise encode as U+FFFD and collide with another string), an
 * element over 65,535 bytes, more than 65,535 pairs.
 */
export function encodeContext(context: EncryptionContext | undefined): Buffer {
  if (context === undefined) return EMPTY_CONTEXT;
  if (typeof context !== "object" || context === null || Array.isArray(context)) {
    throw new EnvelopeError("CONTEXT_INVALID", "the encryption context must be an object of string values");
  }
  const names = Object.keys(context);
  if (names.length === 0) return EMPTY_CONTEXT;
  if (names.length > MAX_CONTEXT_PAIRS) throw new EnvelopeError("CONTEXT_INVALID", `the encryption context has more than ${MAX_CONTEXT_PAIRS} pairs`);
  const pairs = names.map((name) => {
    const value: unknown = context[name];
    if (typeof value !== "string") throw new EnvelopeError("CONTEXT_INVALID", `the encryption context value of "${name}" is not a string`);
    if (name.length === 0) throw new EnvelopeError("CONTEXT_INVALID", "an encryption context name is empty");
    return [utf8(name, "name"), utf8(value, `value of "${name}"`)] as const;
  });
  pairs.sort((a, b) => Buffer.compare(a[0], b[0]));
  let size = 2;
  for (const [name, value] of pairs) size += 4 + name.length + value.length;
  const out = Buffer.allocUnsafe(size);
  let offset = out.writeUInt16BE(pairs.length, 0);
  for (const [name, value] of pairs) {
    offset = out.writeUInt16BE(name.length, offset);
    offset += name.copy(out, offset);
    offset = out.writeUInt16BE(value.length, offset);
    offset += value.copy(out, offset);
  }
  return out;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function utf8(text: string, what: string): Buffer {
  if (LONE_SURROGATE.test(text)) throw new EnvelopeError("CONTEXT_INVALID", `an encryption context ${what} is not well-formed Unicode`);
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length > MAX_CONTEXT_ELEMENT_BYTES) {
    throw new EnvelopeError("CONTEXT_INVALID", `an encryption context ${what} is longer than ${MAX_CONTEXT_ELEMENT_BYTES} bytes`);
  }
  return bytes;
}
