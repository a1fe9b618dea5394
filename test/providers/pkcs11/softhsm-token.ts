/**
 * A SoftHSM2 token for tests: its own SOFTHSM2_CONF and token directory in a
 * temporary folder, initialised with softhsm2-util, AES-256 keys generated
 * in it (sensitive, non-extractable), and the token-side actions that make a
 * provider fail the way an HSM would:
 *
 * - `disableKey`: the security officer switches the key's usage off
 *   (CKA_ENCRYPT / CKA_DECRYPT false): CKR_KEY_FUNCTION_NOT_PERMITTED;
 * - `changePin`: the user PIN is changed and the application logged out, so
 *   the provider's PIN no longer logs in: CKR_PIN_INCORRECT;
 * - `outage`: the library is finalised and the token's storage taken away,
 *   as when a network HSM drops: C_Initialize fails until it is back.
 *
 * SOFTHSM2_CONF is read by C_Initialize, so the token must be created before
 * anything in the process initialises the library. A Cryptoki library's
 * state is per process: this helper's own pkcs11js handle shares it with the
 * provider under test, exactly like a second application thread would.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pkcs11js from "pkcs11js";

const run = promisify(execFile);

const LIBRARY_CANDIDATES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so"];

export interface SoftHsmAvailability {
  readonly library: string | undefined;
  readonly util: string | undefined;
  /** Why the PKCS#11 tests cannot run here, or undefined when they can. */
  readonly missing: string | undefined;
}

export function softHsmAvailability(): SoftHsmAvailability {
  const candidates = process.env["SOFTHSM2_LIB"] === undefined ? LIBRARY_CANDIDATES : [process.env["SOFTHSM2_LIB"]];
  const library = candidates.find((path) => existsSync(path));
  const util = (process.env["PATH"] ?? "").split(":").map((dir) => join(dir, "softhsm2-util")).find((path) => existsSync(path));
  const missing =
    util === undefined || library === undefined
      ? `SoftHSM2 is not installed (${util === undefined ? "softhsm2-util not on PATH" : `no libsofthsm2.so in ${candidates.join(", ")}`}); install it with: apt-get install -y softhsm2`
      : undefined;
  return { library, util, missing };
}

export interface SoftHsmToken {
  readonly library: string;
  readonly tokenLabel: string;
  readonly pin: string;
  readonly dir: string;
  /** Generates a sensitive, non-extractable AES-256 key labelled `label`. */
  createKey(label: string, options?: { readonly extractable?: boolean }): Promise<void>;
  disableKey(label: string): Promise<void>;
  /** Deletes the key object from the token. */
  destroyKey(label: string): Promise<void>;
  /** Whether the key's CKA_SENSITIVE is set and CKA_EXTRACTABLE is not. */
  keyIsLockedIn(label: string): Promise<boolean>;
  enableKey(label: string): Promise<void>;
  /** Changes the user PIN to `newPin` and logs the application out. */
  changePin(newPin: string): Promise<void>;
  /** Restores the original PIN (and logs out, so the next login uses it). */
  restorePin(): Promise<void>;
  /** Takes the token away until the returned function brings it back. */
  outage(): Promise<() => Promise<void>>;
  cleanup(): Promise<void>;
}

export async function createSoftHsmToken(tokenLabel = "matih-test"): Promise<SoftHsmToken> {
  const availability = softHsmAvailability();
  if (availability.missing !== undefined || availability.library === undefined || availability.util === undefined) {
    throw new Error(availability.missing ?? "SoftHSM2 is not installed");
  }
  const library = availability.library;
  const dir = await mkdtemp(join(tmpdir(), "matih-softhsm-"));
  const tokens = join(dir, "tokens");
  await mkdir(tokens);
  const conf = join(dir, "softhsm2.conf");
  await writeFile(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env["SOFTHSM2_CONF"] = conf;
  const pin = "1234-test";
  const soPin = "87654321-so";
  await run(availability.util, ["--init-token", "--free", "--label", tokenLabel, "--so-pin", soPin, "--pin", pin], { env: { ...process.env, SOFTHSM2_CONF: conf } });

  const lib = new pkcs11js.PKCS11();
  lib.load(library);
  let currentPin = pin;

  function initialize(): void {
    try {
      lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (error) {
      if (!String((error as Error).message).startsWith("CKR_CRYPTOKI_ALREADY_INITIALIZED")) throw error;
    }
  }

  /** Runs `use` in a fresh read-write session logged in as the user. */
  async function asUser<T>(use: (session: Buffer) => T): Promise<T> {
    initialize();
    const slot = lib.C_GetSlotList(true).find((candidate) => lib.C_GetTokenInfo(candidate).label.trim() === tokenLabel);
    if (slot === undefined) throw new Error(`token ${tokenLabel} not present`);
    const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      try {
        lib.C_Login(session, pkcs11js.CKU_USER, currentPin);
      } catch (error) {
        if (!String((error as Error).message).startsWith("CKR_USER_ALREADY_LOGGED_IN")) throw error;
      }
      return use(session);
    } finally {
      lib.C_CloseSession(session);
    }
  }

  function findKey(session: Buffer, label: string): Buffer {
    lib.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    const [key] = lib.C_FindObjects(session, 1);
    lib.C_FindObjectsFinal(session);
    if (key === undefined) throw new Error(`no key ${label}`);
    return key;
  }

  function setUsage(label: string, enabled: boolean): Promise<void> {
    return asUser((session) => {
      lib.C_SetAttributeValue(session, findKey(session, label), [
        { type: pkcs11js.CKA_ENCRYPT, value: enabled },
        { type: pkcs11js.CKA_DECRYPT, value: enabled },
      ]);
    });
  }

  async function setPin(next: string): Promise<void> {
    await asUser((session) => {
      lib.C_SetPIN(session, currentPin, next);
      currentPin = next;
      lib.C_Logout(session);
    });
  }

  return {
    library,
    tokenLabel,
    pin,
    dir,
    createKey: (label, options = {}) =>
      asUser((session) => {
        lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
          { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
          { type: pkcs11js.CKA_LABEL, value: label },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: options.extractable !== true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: options.extractable === true },
          { type: pkcs11js.CKA_ENCRYPT, value: true },
          { type: pkcs11js.CKA_DECRYPT, value: true },
        ]);
      }),
    disableKey: (label) => setUsage(label, false),
    destroyKey: (label) => asUser((session) => lib.C_DestroyObject(session, findKey(session, label))),
    keyIsLockedIn: (label) =>
      asUser((session) => {
        const [sensitive, extractable] = lib.C_GetAttributeValue(session, findKey(session, label), [{ type: pkcs11js.CKA_SENSITIVE }, { type: pkcs11js.CKA_EXTRACTABLE }]);
        return (sensitive?.value as Buffer | undefined)?.[0] === 1 && (extractable?.value as Buffer | undefined)?.[0] === 0;
      }),
    enableKey: (label) => setUsage(label, true),
    changePin: (newPin) => setPin(newPin),
    restorePin: () => setPin(pin),
    async outage() {
      try {
        lib.C_Finalize();
      } catch {
        // Not initialised in this process yet.
      }
      await rename(tokens, `${tokens}.away`);
      return async () => {
        await rename(`${tokens}.away`, tokens);
      };
    },
    async cleanup() {
      try {
        lib.C_Finalize();
      } catch {
        // Already finalised.
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
