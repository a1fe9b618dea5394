/**
 * `pkcs11`: the master key is an AES-256 secret key object in a PKCS#11 token
 * (HSM), CKA_SENSITIVE and not CKA_EXTRACTABLE, so its value can never be
 * read out. Wrap and unwrap are AES-256-GCM *inside the token* (CKM_AES_GCM,
 * C_Encrypt / C_Decrypt) with a fresh 96-bit nonce and the context as AAD
 * (decision 0020: GCM, not AES-KWP, because KWP has no associated data and
 * C_WrapKey only wraps key objects, while KEKs arrive here as bytes).
 *
 *   blob = 0x01 | nonce(12) | ciphertext | tag(16)      AAD = 0x01 | context
 *
 * The cryptographic calls run on libuv's worker threads (pkcs11js ...Async),
 * never on the event loop; a pool of sessions (one operation at a time per
 * session, as Cryptoki requires) bounds how many run at once. A lost
 * library, session or login is repaired by reconnecting once, so service
 * resumes by itself when the token comes back.
 *
 * Opening refuses a key that is extractable or not sensitive: such a key
 * could leave the HSM, which the master key must never do.
 */
import { randomBytes } from "../../crypto/random.js";
import { wipe } from "../../crypto/secure-buffer.js";
import {
  checkWrapPlaintext,
  encodeWrapContext,
  KeyWrappingError,
  type KeyWrappingProvider,
  type WrapContext,
  type WrapFailure,
} from "../key-wrapping-provider.js";
import { classifyPkcs11ConnectFailure, classifyPkcs11OperationFailure, CONNECTION_LOST } from "./pkcs11-failure.js";
import { acquirePkcs11Module, ckr, type SharedPkcs11Module } from "./pkcs11-module.js";

export interface Pkcs11ProviderOptions {
  /** Path of the vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  readonly library: string;
  /** The token's label (slot ids are not stable; labels are). */
  readonly tokenLabel: string;
  /** The user PIN. */
  readonly pin: string;
  /** CKA_LABEL of the AES-256 key. */
  readonly keyLabel: string;
  /** Sessions (operations in flight). Default 4, libuv's default worker count. */
  readonly sessions?: number;
  /** Development and tests only: generate the key in the token when it is absent. */
  readonly createKeyIfMissing?: boolean;
}

const FORMAT = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

interface Connection {
  readonly generation: number;
  readonly key: Buffer;
  readonly slot: Buffer;
  readonly idle: Buffer[];
  open: number;
  lost: boolean;
}

class ConnectFailure extends Error {
  constructor(
    readonly failure: WrapFailure,
    message: string,
    options: { readonly cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
  }
}

export function pkcs11KeyRef(tokenLabel: string, keyLabel: string): string {
  const encode = (value: string) => encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `pkcs11:token=${encode(tokenLabel)};object=${encode(keyLabel)};type=secret-key`;
}

export async function openPkcs11Provider(options: Pkcs11ProviderOptions): Promise<KeyWrappingProvider> {
  const maxSessions = options.sessions ?? 4;
  if (!Number.isInteger(maxSessions) || maxSessions < 1) throw new TypeError("pkcs11: sessions must be a positive integer");
  const keyRef = pkcs11KeyRef(options.tokenLabel, options.keyLabel);
  const where = { provider: "pkcs11" as const, keyRef };
  let module: SharedPkcs11Module;
  try {
    module = await acquirePkcs11Module(options.library);
  } catch (error) {
    throw new KeyWrappingError("unavailable", { ...where, operation: "wrap" }, `the PKCS#11 library ${options.library} cannot be loaded: ${describe(error)}`, { cause: error });
  }
  const { api, lib } = module;
  let current: Connection | undefined;
  let connecting: Promise<Connection> | undefined;
  let closed = false;
  let inFlight = 0;
  let drained: (() => void) | undefined;
  const waiters: Array<() => void> = [];

  function connect(): Connection {
    try {
      module.ensureInitialized();
    } catch (error) {
      throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "initialize"), `the PKCS#11 library cannot be initialised: ${describe(error)}`, { cause: error });
    }
    let slot: Buffer | undefined;
    try {
      slot = lib.C_GetSlotList(true).find((candidate) => lib.C_GetTokenInfo(candidate).label.trim() === options.tokenLabel);
    } catch (error) {
      throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "token"), `the token list cannot be read: ${describe(error)}`, { cause: error });
    }
    if (slot === undefined) throw new ConnectFailure(classifyPkcs11ConnectFailure(undefined, "token"), `no token labelled ${options.tokenLabel} is present`);
    let session: Buffer;
    try {
      session = lib.C_OpenSession(slot, api.CKF_SERIAL_SESSION);
    } catch (error) {
      throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "session"), `a session on token ${options.tokenLabel} cannot be opened: ${describe(error)}`, { cause: error });
    }
    try {
      try {
        lib.C_Login(session, api.CKU_USER, options.pin);
      } catch (error) {
        // Logins are per application and token: another provider on this token may have logged in already.
        if (ckr(error) !== "CKR_USER_ALREADY_LOGGED_IN") {
          throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "login"), `login to token ${options.tokenLabel} refused: ${describe(error)}`, { cause: error });
        }
      }
      const key = findOrCreateKey(slot, session);
      return { generation: module.generation, key, slot, idle: [session], open: 1, lost: false };
    } catch (error) {
      closeQuietly(session);
      throw error;
    }
  }

  function findOrCreateKey(slot: Buffer, session: Buffer): Buffer {
    let found: Buffer[];
    try {
      lib.C_FindObjectsInit(session, [
        { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
        { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
        { type: api.CKA_LABEL, value: options.keyLabel },
      ]);
      try {
        found = lib.C_FindObjects(session, 2);
      } finally {
        lib.C_FindObjectsFinal(session);
      }
    } catch (error) {
      throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "key"), `the key ${options.keyLabel} cannot be looked up: ${describe(error)}`, { cause: error });
    }
    if (found.length > 1) throw new ConnectFailure("other", `token ${options.tokenLabel} holds more than one AES key labelled ${options.keyLabel}`);
    const key = found[0] ?? (options.createKeyIfMissing === true ? generateKey(slot) : undefined);
    if (key === undefined) throw new ConnectFailure(classifyPkcs11ConnectFailure(undefined, "key"), `token ${options.tokenLabel} holds no AES key labelled ${options.keyLabel}`);
    const attributes = lib.C_GetAttributeValue(session, key, [
      { type: api.CKA_SENSITIVE },
      { type: api.CKA_EXTRACTABLE },
      { type: api.CKA_VALUE_LEN },
    ]);
    const flag = (index: number) => (attributes[index]?.value as Buffer | undefined)?.[0] === 1;
    const lengthBytes = attributes[2]?.value as Buffer | undefined; // a CK_ULONG in the platform's byte order (little-endian here)
    const length = lengthBytes === undefined || lengthBytes.length === 0 ? undefined : lengthBytes.readUIntLE(0, Math.min(6, lengthBytes.length));
    if (!flag(0) || flag(1)) {
      throw new ConnectFailure("other", `key ${options.keyLabel} must be CKA_SENSITIVE and not CKA_EXTRACTABLE: a master key that can leave the HSM is refused`);
    }
    if (length !== 32) throw new ConnectFailure("other", `key ${options.keyLabel} must be AES-256 (32 bytes), not ${String(length)} bytes`);
    return key;
  }

  function generateKey(slot: Buffer): Buffer {
    const session = lib.C_OpenSession(slot, api.CKF_SERIAL_SESSION | api.CKF_RW_SESSION);
    try {
      return lib.C_GenerateKey(session, { mechanism: api.CKM_AES_KEY_GEN }, [
        { type: api.CKA_CLASS, value: api.CKO_SECRET_KEY },
        { type: api.CKA_KEY_TYPE, value: api.CKK_AES },
        { type: api.CKA_VALUE_LEN, value: 32 },
        { type: api.CKA_LABEL, value: options.keyLabel },
        { type: api.CKA_ID, value: randomBytes(16) },
        { type: api.CKA_TOKEN, value: true },
        { type: api.CKA_PRIVATE, value: true },
        { type: api.CKA_SENSITIVE, value: true },
        { type: api.CKA_EXTRACTABLE, value: false },
        { type: api.CKA_ENCRYPT, value: true },
        { type: api.CKA_DECRYPT, value: true },
        { type: api.CKA_WRAP, value: false },
        { type: api.CKA_UNWRAP, value: false },
        { type: api.CKA_DERIVE, value: false },
      ]);
    } finally {
      closeQuietly(session);
    }
  }

  function closeQuietly(session: Buffer): void {
    try {
      lib.C_CloseSession(session);
    } catch {
      // The session died with its connection.
    }
  }

  function invalidate(connection: Connection, code: string | undefined): void {
    if (!connection.lost) {
      connection.lost = true;
      for (const session of connection.idle.splice(0)) closeQuietly(session);
      if (code === "CKR_CRYPTOKI_NOT_INITIALIZED") module.markLost(connection.generation);
    }
    if (current === connection) current = undefined;
    for (const wake of waiters.splice(0)) wake();
  }

  async function connected(): Promise<Connection> {
    if (current !== undefined && !current.lost && current.generation === module.generation) return current;
    if (current !== undefined) invalidate(current, undefined);
    connecting ??= Promise.resolve()
      .then(connect)
      .then((connection) => (current = connection))
      .finally(() => (connecting = undefined));
    return connecting;
  }

  async function acquire(): Promise<{ connection: Connection; session: Buffer }> {
    for (;;) {
      if (closed) throw new ConnectFailure("other", "the provider is closed");
      const connection = await connected();
      const session = connection.idle.pop();
      if (session !== undefined) return { connection, session };
      if (connection.open < maxSessions) {
        connection.open += 1;
        try {
          return { connection, session: lib.C_OpenSession(connection.slot, api.CKF_SERIAL_SESSION) };
        } catch (error) {
          connection.open -= 1;
          invalidate(connection, ckr(error));
          throw new ConnectFailure(classifyPkcs11ConnectFailure(ckr(error), "session"), `a session cannot be opened: ${describe(error)}`, { cause: error });
        }
      }
      await new Promise<void>((resolve) => waiters.push(resolve));
    }
  }

  function release(connection: Connection, session: Buffer, discard: boolean): void {
    if (discard || connection.lost || closed) {
      closeQuietly(session);
      connection.open -= 1;
    } else {
      connection.idle.push(session);
    }
    waiters.shift()?.();
  }

  async function run(operation: "wrap" | "unwrap", use: (session: Buffer, key: Buffer) => Promise<Buffer>): Promise<Buffer> {
    inFlight += 1;
    try {
      return await attempt(operation, use);
    } finally {
      inFlight -= 1;
      if (inFlight === 0) drained?.();
    }
  }

  async function attempt(operation: "wrap" | "unwrap", use: (session: Buffer, key: Buffer) => Promise<Buffer>): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      let lease: { connection: Connection; session: Buffer };
      try {
        lease = await acquire();
      } catch (error) {
        const failure = error instanceof ConnectFailure ? error.failure : "other";
        throw new KeyWrappingError(failure, { ...where, operation }, `PKCS#11 ${operation} under ${keyRef} failed (${failure}): ${describe(error)}`, { cause: error });
      }
      try {
        const result = await use(lease.session, lease.connection.key);
        release(lease.connection, lease.session, false);
        return result;
      } catch (error) {
        const code = ckr(error);
        // A failed operation may leave the session mid-operation: never reuse it.
        release(lease.connection, lease.session, true);
        if (attempt === 0 && code !== undefined && CONNECTION_LOST.has(code)) {
          invalidate(lease.connection, code);
          continue;
        }
        const failure = classifyPkcs11OperationFailure(code, operation);
        throw new KeyWrappingError(failure, { ...where, operation }, `PKCS#11 ${operation} under ${keyRef} failed (${failure}): ${describe(error)}`, { cause: error });
      }
    }
  }

  function gcm(nonce: Buffer, aad: Buffer) {
    return { mechanism: api.CKM_AES_GCM, parameter: { type: api.CK_PARAMS_GCM, iv: nonce, ivBits: NONCE_BYTES * 8, aad, tagBits: TAG_BYTES * 8 } };
  }

  try {
    await connected();
  } catch (error) {
    module.release();
    const failure = error instanceof ConnectFailure ? error.failure : "other";
    throw new KeyWrappingError(failure, { ...where, operation: "wrap" }, `PKCS#11 provider cannot open ${keyRef} (${failure}): ${describe(error)}`, { cause: error });
  }

  return {
    kind: "pkcs11",
    keyRef,
    async wrap(plaintext: Uint8Array, context: WrapContext): Promise<Buffer> {
      checkWrapPlaintext(plaintext, where);
      const header = Buffer.from([FORMAT]);
      const aad = Buffer.concat([header, encodeWrapContext(context)]);
      // A retry after a lost session reuses the nonce with the same key, plaintext and AAD: the same ciphertext, no GCM nonce misuse.
      const nonce = randomBytes(NONCE_BYTES);
      const input = Buffer.isBuffer(plaintext) ? plaintext : Buffer.from(plaintext);
      try {
        const sealed = await run("wrap", async (session, key) => {
          lib.C_EncryptInit(session, gcm(nonce, aad), key);
          return lib.C_EncryptAsync(session, input, Buffer.alloc(input.length + TAG_BYTES));
        });
        return Buffer.concat([header, nonce, sealed]);
      } finally {
        if (input !== plaintext) wipe(input);
      }
    },
    async unwrap(wrapped: Uint8Array, context: WrapContext): Promise<Buffer> {
      const blob = Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength);
      if (blob.length < 1 + NONCE_BYTES + TAG_BYTES + 1 || blob[0] !== FORMAT) {
        throw new KeyWrappingError("invalid-ciphertext", { ...where, operation: "unwrap" }, "the blob is not a PKCS#11 AES-GCM wrap");
      }
      const aad = Buffer.concat([blob.subarray(0, 1), encodeWrapContext(context)]);
      const nonce = Buffer.from(blob.subarray(1, 1 + NONCE_BYTES));
      const sealed = Buffer.from(blob.subarray(1 + NONCE_BYTES));
      return run("unwrap", async (session, key) => {
        lib.C_DecryptInit(session, gcm(nonce, aad), key);
        return lib.C_DecryptAsync(session, sealed, Buffer.alloc(sealed.length));
      });
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const wake of waiters.splice(0)) wake();
      // Finalising the library under a call still running on a worker thread would pull the token from under it.
      if (inFlight > 0) await new Promise<void>((resolve) => (drained = resolve));
      if (current !== undefined) invalidate(current, undefined);
      module.release();
    },
  };
}

/** The Cryptoki return value (or the loader's message): never data. */
function describe(error: unknown): string {
  if (error instanceof Error) return error.message.split("\n")[0] ?? error.name;
  return String(error);
}
