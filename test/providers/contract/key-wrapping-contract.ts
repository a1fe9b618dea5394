/**
 * THE provider contract: the same cases over every root/KEK provider —
 * local, pkcs11 (SoftHSM2), aws-kms, azure-keyvault, gcp-kms — each against
 * its local server or token, or against a real cloud (npm run smoke:cloud).
 *
 * Each case checks both ports where the provider has them: the service's
 * RootKeyProvider (reasons PROVIDER_UNAVAILABLE / INTERNAL) and the
 * KeyWrappingProvider (the five failure classes). The local provider
 * predates the wrapping port and has no remote side to lose, so the failure
 * scenarios it cannot have are skipped with the reason in the test's name.
 */
import { afterAll, describe, expect, it } from "vitest";
import type { RootKeyProvider } from "../../../server/src/domain/root-key-provider.js";
import { KmsError } from "../../../server/src/domain/kms-error.js";
import { KeyWrappingError, type KeyWrappingProvider, type WrapContext, type WrapFailure } from "../../../server/src/providers/key-wrapping-provider.js";

export type FailureScenario = "unavailable" | "permission-denied" | "key-disabled";

export interface StagedFailure {
  /** The provider that now fails: key A's own provider, or (real clouds) one over a fixture key. */
  readonly provider: KeyWrappingProvider;
  /** The root port over the same provider. */
  readonly root: RootKeyProvider;
  /** True when `provider` is key A's: a blob wrapped before the failure can then be tried, and must work again after `end`. */
  readonly isKeyA: boolean;
  /** Ends the failure (absent for fixtures that stay failed). */
  end?(): Promise<void>;
}

export interface ContractSubject {
  /** The service's port over key A. */
  readonly root: RootKeyProvider;
  /** The service's port over key B: same kind, another key. */
  readonly otherRoot: RootKeyProvider;
  /** The wrapping port over keys A and B; absent for `local`. */
  readonly wrapping: { readonly a: KeyWrappingProvider; readonly b: KeyWrappingProvider } | undefined;
  stage(scenario: FailureScenario): Promise<StagedFailure>;
  close(): Promise<void>;
}

export interface ContractTarget {
  readonly name: string;
  /** Why the whole target cannot run here (the suite skips, saying so). */
  readonly skip: string | undefined;
  /** For each scenario: true when it can be staged, else why not. */
  readonly scenarios: { readonly [S in FailureScenario]: true | string };
  open(): Promise<ContractSubject>;
  /** How long a recovered service may take to be reachable again (gRPC reconnect back-off). Default 15 s. */
  readonly recoveryMs?: number;
}

const CONTEXT: WrapContext = { purpose: "kek", tenantId: "tenant-a", keyId: "pii", version: 3 };
const KEK_CONTEXT = { tenantId: "tenant-a", keyId: "pii", kekVersion: 3 };
/** A recognisable secret, so the checks below can look for it anywhere it must not be. */
const SECRET = Buffer.from("5ec12e7a5ec12e7a5ec12e7a5ec12e7a5ec12e7a5ec12e7a5ec12e7a5ec12e7a", "hex");

const EXPECTED_FAILURE: { readonly [S in FailureScenario]: WrapFailure } = {
  unavailable: "unavailable",
  "permission-denied": "permission-denied",
  "key-disabled": "key-disabled",
};

/** Every message and cause message of an error chain, for leak checks. */
function errorText(error: unknown): string {
  const parts: string[] = [];
  for (let current: unknown = error, depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    if (current instanceof Error) parts.push(current.name, current.message, String((current as { stack?: unknown }).stack ?? ""));
    else parts.push(String(current));
    current = (current as { cause?: unknown }).cause;
  }
  return parts.join("\n");
}

function expectNoSecret(error: unknown, secret: Buffer): void {
  const text = errorText(error);
  for (const encoding of ["hex", "base64", "base64url"] as const) {
    expect(text.includes(secret.toString(encoding)), `error text contains the plaintext (${encoding})`).toBe(false);
  }
}

async function expectWrapFailure(promise: Promise<unknown>, failure: WrapFailure, secret = SECRET): Promise<KeyWrappingError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected the call to fail").toBeInstanceOf(KeyWrappingError);
  const wrappingError = error as KeyWrappingError;
  expect({ failure: wrappingError.failure, message: wrappingError.message }).toMatchObject({ failure });
  expectNoSecret(error, secret);
  return wrappingError;
}

async function expectRootFailure(promise: Promise<unknown>, reason: "PROVIDER_UNAVAILABLE" | "INTERNAL", failure?: WrapFailure): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected the call to fail").toBeInstanceOf(KmsError);
  const kmsError = error as KmsError;
  expect({ reason: kmsError.reason, message: kmsError.message }).toMatchObject({ reason });
  if (failure !== undefined && kmsError.metadata["failure"] !== undefined) expect(kmsError.metadata["failure"]).toBe(failure);
  expectNoSecret(error, SECRET);
}

async function eventually<T>(attempt: () => Promise<T>, withinMs: number): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

function tampered(blob: Buffer): Array<[string, Buffer]> {
  const flip = (at: number) => {
    const copy = Buffer.from(blob);
    copy[at] = (copy[at] ?? 0) ^ 0x01;
    return copy;
  };
  return [
    ["its first byte flipped", flip(0)],
    ["a middle byte flipped", flip(blob.length >> 1)],
    ["its last byte flipped", flip(blob.length - 1)],
    ["its last byte cut off", blob.subarray(0, blob.length - 1)],
    ["an empty blob", Buffer.alloc(0)],
  ];
}

export function describeKeyWrappingContract(target: ContractTarget): void {
  describe.skipIf(target.skip !== undefined)(`provider contract: ${target.name}${target.skip === undefined ? "" : ` — skipped: ${target.skip}`}`, () => {
    let subject: ContractSubject | undefined;
    async function open(): Promise<ContractSubject> {
      subject ??= await target.open();
      return subject;
    }
    // One subject for the whole suite: starting servers and tokens per case would dominate the run.
    afterAll(async () => {
      await subject?.close();
      subject = undefined;
    });

    describe("round trip", () => {
      it("wraps and unwraps a 32-byte key unchanged, through both ports", async () => {
        const s = await open();
        const wrapped = await s.root.wrap(SECRET, KEK_CONTEXT);
        expect(await s.root.unwrap(wrapped, KEK_CONTEXT, s.root.currentKeyId)).toEqual(SECRET);
        if (s.wrapping !== undefined) {
          const blob = await s.wrapping.a.wrap(SECRET, CONTEXT);
          expect(await s.wrapping.a.unwrap(blob, CONTEXT)).toEqual(SECRET);
        }
      });

      it("wraps and unwraps a 2,400-byte KEK (an RSA-4096 private key's PKCS#8 is that large)", async () => {
        const s = await open();
        const large = Buffer.alloc(2400);
        for (let i = 0; i < large.length; i++) large[i] = (i * 131 + 7) & 0xff;
        const wrapped = await s.root.wrap(large, KEK_CONTEXT);
        expect(await s.root.unwrap(wrapped, KEK_CONTEXT, s.root.currentKeyId)).toEqual(large);
      });

      it("never puts the plaintext in the blob, and wrapping the same key twice gives different blobs", async () => {
        const s = await open();
        const first = await s.root.wrap(SECRET, KEK_CONTEXT);
        const second = await s.root.wrap(SECRET, KEK_CONTEXT);
        expect(first.includes(SECRET)).toBe(false);
        expect(first.includes(SECRET.subarray(0, 16))).toBe(false);
        expect(first.equals(second)).toBe(false);
      });

      it("serves 64 concurrent wraps and unwraps", async () => {
        const s = await open();
        const secrets = Array.from({ length: 64 }, (_, i) => Buffer.alloc(32, i + 1));
        const blobs = await Promise.all(secrets.map((secret) => s.root.wrap(secret, KEK_CONTEXT)));
        const opened = await Promise.all(blobs.map((blob) => s.root.unwrap(blob, KEK_CONTEXT, s.root.currentKeyId)));
        expect(opened).toEqual(secrets);
      });

      it("names itself and its key on the root port as the wrapping port does", async () => {
        const s = await open();
        expect(s.root.currentKeyId).not.toBe("");
        expect(s.otherRoot.currentKeyId).not.toBe(s.root.currentKeyId);
        if (s.wrapping !== undefined) {
          expect(s.root.name).toBe(s.wrapping.a.kind);
          expect(s.root.currentKeyId).toBe(s.wrapping.a.keyRef);
        }
      });
    });

    describe("context binding", () => {
      it.each([
        ["another tenant", { ...KEK_CONTEXT, tenantId: "tenant-b" }],
        ["another key", { ...KEK_CONTEXT, keyId: "documents" }],
        ["another KEK version", { ...KEK_CONTEXT, kekVersion: 4 }],
      ])("refuses to unwrap under %s (root port: INTERNAL)", async (_what, other) => {
        const s = await open();
        const wrapped = await s.root.wrap(SECRET, KEK_CONTEXT);
        await expectRootFailure(s.root.unwrap(wrapped, other, s.root.currentKeyId), "INTERNAL", "invalid-ciphertext");
      });

      it("refuses to unwrap under another tenant, key, version or purpose (wrapping port: invalid-ciphertext)", async (ctx) => {
        const s = await open();
        if (s.wrapping === undefined) return ctx.skip();
        const blob = await s.wrapping.a.wrap(SECRET, CONTEXT);
        for (const other of [
          { ...CONTEXT, tenantId: "tenant-b" },
          { ...CONTEXT, keyId: "documents" },
          { ...CONTEXT, version: 4 },
          { ...CONTEXT, purpose: "dek" as const },
        ]) {
          await expectWrapFailure(s.wrapping.a.unwrap(blob, other), "invalid-ciphertext");
        }
      });
    });

    describe("wrong key", () => {
      it("refuses a blob wrapped under another key of the same provider (root port: INTERNAL; wrapping port: invalid-ciphertext)", async () => {
        const s = await open();
        const wrapped = await s.root.wrap(SECRET, KEK_CONTEXT);
        await expectRootFailure(s.otherRoot.unwrap(wrapped, KEK_CONTEXT, s.otherRoot.currentKeyId), "INTERNAL", "invalid-ciphertext");
        if (s.wrapping !== undefined) {
          const blob = await s.wrapping.a.wrap(SECRET, CONTEXT);
          await expectWrapFailure(s.wrapping.b.unwrap(blob, CONTEXT), "invalid-ciphertext");
        }
      });

      it("answers PROVIDER_UNAVAILABLE for a blob whose stored root key id names a key it does not hold", async () => {
        const s = await open();
        const wrapped = await s.root.wrap(SECRET, KEK_CONTEXT);
        await expectRootFailure(s.otherRoot.unwrap(wrapped, KEK_CONTEXT, s.root.currentKeyId), "PROVIDER_UNAVAILABLE");
      });
    });

    describe("tampered blob", () => {
      it("refuses every alteration: a flipped byte anywhere, a truncated or empty blob", async () => {
        const s = await open();
        const wrapped = await s.root.wrap(SECRET, KEK_CONTEXT);
        for (const [what, blob] of tampered(wrapped)) {
          const error = await s.root.unwrap(blob, KEK_CONTEXT, s.root.currentKeyId).then(
            () => new Error(`a blob with ${what} unwrapped`),
            (e: unknown) => e,
          );
          expect(error, what).toBeInstanceOf(KmsError);
          expect((error as KmsError).reason, what).toBe("INTERNAL");
        }
        if (s.wrapping !== undefined) {
          const blob = await s.wrapping.a.wrap(SECRET, CONTEXT);
          for (const [what, altered] of tampered(blob)) {
            const error = await expectWrapFailure(s.wrapping.a.unwrap(altered, CONTEXT), "invalid-ciphertext").catch((e: unknown) => {
              throw new Error(`${what}: ${String(e)}`);
            });
            expect(error.operation).toBe("unwrap");
          }
        }
      });
    });

    for (const scenario of ["unavailable", "permission-denied", "key-disabled"] as const) {
      const support = target.scenarios[scenario];
      const title = `${scenario}: both operations fail as "${EXPECTED_FAILURE[scenario]}" (root port: PROVIDER_UNAVAILABLE), and service resumes by itself when it ends`;
      it.skipIf(support !== true)(support === true ? title : `${title} — not applicable: ${support}`, async () => {
        const s = await open();
        if (s.wrapping === undefined) throw new Error("a target with failure scenarios must expose the wrapping port");
        const blob = await s.wrapping.a.wrap(SECRET, CONTEXT);
        const rootBlob = await s.root.wrap(SECRET, KEK_CONTEXT);
        const staged = await s.stage(scenario);
        try {
          const onWrap = await expectWrapFailure(staged.provider.wrap(SECRET, CONTEXT), EXPECTED_FAILURE[scenario]);
          expect(onWrap.operation).toBe("wrap");
          await expectRootFailure(staged.root.wrap(SECRET, KEK_CONTEXT), "PROVIDER_UNAVAILABLE", EXPECTED_FAILURE[scenario]);
          if (staged.isKeyA) {
            const onUnwrap = await expectWrapFailure(staged.provider.unwrap(blob, CONTEXT), EXPECTED_FAILURE[scenario]);
            expect(onUnwrap.operation).toBe("unwrap");
            await expectRootFailure(staged.root.unwrap(rootBlob, KEK_CONTEXT, staged.root.currentKeyId), "PROVIDER_UNAVAILABLE", EXPECTED_FAILURE[scenario]);
          }
        } finally {
          await staged.end?.();
        }
        if (staged.isKeyA && staged.end !== undefined) {
          const recovered = await eventually(() => s.wrapping!.a.unwrap(blob, CONTEXT), target.recoveryMs ?? 15_000);
          expect(recovered).toEqual(SECRET);
          expect(await s.root.unwrap(rootBlob, KEK_CONTEXT, s.root.currentKeyId)).toEqual(SECRET);
          expect(await s.wrapping.a.unwrap(await s.wrapping.a.wrap(SECRET, CONTEXT), CONTEXT)).toEqual(SECRET);
        }
      });
    }
  });
}
