/**
 * One loaded PKCS#11 library per process and path, shared by every provider
 * that uses it. A Cryptoki library keeps global state (C_Initialize once per
 * process; logins per application and token), so two providers on one token
 * (two keys) must not initialise, finalise or log out under each other.
 *
 * `pkcs11js` is imported here, lazily, the first time a library is acquired:
 * a deployment without PKCS#11 never loads the native module.
 *
 * `generation` counts initialisations. When the library is found finalised
 * (CKR_CRYPTOKI_NOT_INITIALIZED: the device or its driver was reset), one
 * provider re-initialises it and every provider sees a new generation and
 * reconnects (sessions, login, key handle) before its next operation.
 */
import type * as Pkcs11js from "pkcs11js";

export type Pkcs11Api = typeof Pkcs11js;
export type Pkcs11Library = Pkcs11js.PKCS11;

export interface SharedPkcs11Module {
  readonly path: string;
  /** The pkcs11js namespace: constants (CKA_*, CKM_*, ...) and classes. */
  readonly api: Pkcs11Api;
  readonly lib: Pkcs11Library;
  /** Bumped at each successful C_Initialize. */
  readonly generation: number;
  /** Initialises the library if it is not (ALREADY_INITIALIZED counts as success). */
  ensureInitialized(): void;
  /** Marks the library lost as seen at `generation`; the next ensureInitialized() starts it again. */
  markLost(generation: number): void;
  release(): void;
}

const modules = new Map<string, { module: SharedPkcs11Module; refs: number }>();
let apiPromise: Promise<Pkcs11Api> | undefined;

async function loadApi(): Promise<Pkcs11Api> {
  apiPromise ??= import("pkcs11js").then((imported) => ((imported as { default?: Pkcs11Api }).default ?? imported) as Pkcs11Api);
  return apiPromise;
}

/** The Cryptoki return-value name of a pkcs11js error ("CKR_PIN_INCORRECT"), or undefined for any other error. */
export function ckr(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const message = (error as { message?: unknown }).message;
  if (typeof message !== "string") return undefined;
  return /^(CKR_[A-Z0-9_]+)/.exec(message)?.[1];
}

export async function acquirePkcs11Module(path: string): Promise<SharedPkcs11Module> {
  const existing = modules.get(path);
  if (existing !== undefined) {
    existing.refs += 1;
    return existing.module;
  }
  const api = await loadApi();
  const raced = modules.get(path);
  if (raced !== undefined) {
    raced.refs += 1;
    return raced.module;
  }
  const lib = new api.PKCS11();
  lib.load(path);
  let initialized = false;
  let generation = 0;

  const module: SharedPkcs11Module = {
    path,
    api,
    lib,
    get generation() {
      return generation;
    },
    ensureInitialized(): void {
      if (initialized) return;
      try {
        // OS locking: pkcs11js runs the ...Async calls on libuv's worker threads.
        lib.C_Initialize({ flags: api.CKF_OS_LOCKING_OK });
      } catch (error) {
        if (ckr(error) !== "CKR_CRYPTOKI_ALREADY_INITIALIZED") throw error;
      }
      initialized = true;
      generation += 1;
    },
    markLost(seen: number): void {
      if (seen !== generation || !initialized) return;
      initialized = false;
      try {
        lib.C_Finalize();
      } catch {
        // Already finalised: that is how it was lost.
      }
    },
    release(): void {
      const entry = modules.get(path);
      if (entry === undefined) return;
      entry.refs -= 1;
      if (entry.refs > 0) return;
      modules.delete(path);
      if (initialized) {
        initialized = false;
        try {
          lib.C_Finalize();
        } catch {
          // Nothing left to release.
        }
      }
      try {
        lib.close();
      } catch {
        // The library may refuse to unload while the process holds it; harmless.
      }
    },
  };
  modules.set(path, { module, refs: 1 });
  return module;
}
