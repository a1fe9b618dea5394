/**
 * The state machines of a key and of a DEK version, as a table: every
 * transition there is and every one that must be refused, each driven
 * through the real services and jobs from a key freshly brought into the
 * starting state, on PostgreSQL and on PGlite. A last check ties the table
 * to domain/key-state-machine.ts: every documented transition is exercised
 * here, and nothing happens here that is not documented.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorReason } from "../gen/matih/kms/v1/errors_pb.js";
import { StoreKind } from "../gen/matih/kms/v1/resources_pb.js";
import { DEK_VERSION_TRANSITIONS, KEY_TRANSITIONS } from "../server/src/domain/key-state-machine.js";
import { runDestruction } from "../server/src/jobs/destruction.js";
import { runPurge } from "../server/src/jobs/purge.js";
import { engines } from "./support/databases.js";
import { expectRefusal } from "./support/expect-refusal.js";
import { createTestKms, type TestKms } from "./support/kms-harness.js";
import { DAY_MS, DAY_S, dekRows, eventsOf, keyRow } from "./support/lifecycle.js";

const TENANT = "sm";
const WAITING_DAYS = 7;
const GRACE_DAYS = 7;

/** One key per table row; `reference` names its DEK version 1. */
interface Env {
  readonly kms: TestKms;
  readonly keyId: string;
  reference: Uint8Array;
}

const clients = (env: Env) => env.kms.clients();
const advanceDays = (env: Env, n: number) => env.kms.clock.set(new Date(env.kms.clock.now().getTime() + n * DAY_MS));
const purgeNow = (env: Env) => runPurge(env.kms.context, env.kms.clock.now());
const destroyNow = (env: Env) => runDestruction(env.kms.context, env.kms.clock.now());
const report = (env: Env, counts: { dekVersion: number; ciphertexts: bigint }[]) =>
  clients(env).datasets.reportInventory({ tenantId: TENANT, keyId: env.keyId, datasetId: "ds", counts });

async function createKey(env: Env): Promise<void> {
  const { keys, dataKeys } = clients(env);
  await keys.createKey({
    tenantId: TENANT,
    keyId: env.keyId,
    lifecyclePolicy: { revocationWaitingPeriod: create(DurationSchema, { seconds: BigInt(WAITING_DAYS * DAY_S) }) },
  });
  env.reference = (await dataKeys.generateDataKey({ tenantId: TENANT, keyId: env.keyId })).reference;
}
const key = (env: Env) => ({ tenantId: TENANT, keyId: env.keyId });

/** Brings a fresh key (or its DEK version 1) into a state. */
const SETUPS = {
  "key ENABLED": createKey,
  "key REVOKED": async (env: Env) => {
    await createKey(env);
    await clients(env).keys.revokeKey(key(env));
  },
  "key REVOKED, waiting period over": async (env: Env) => {
    await SETUPS["key REVOKED"](env);
    advanceDays(env, WAITING_DAYS);
  },
  "key DESTROYED": async (env: Env) => {
    await SETUPS["key REVOKED, waiting period over"](env);
    await destroyNow(env);
  },
  "v1 PRIMARY": createKey,
  "v1 DECRYPT_ONLY": async (env: Env) => {
    await createKey(env);
    await clients(env).keys.rotateKey(key(env));
  },
  "v1 DECRYPT_ONLY, held by a dataset": async (env: Env) => {
    await createKey(env);
    await clients(env).datasets.registerDataset({ ...key(env), datasetId: "ds", storeKind: StoreKind.POSTGRES });
    await clients(env).keys.rotateKey(key(env));
    await report(env, [{ dekVersion: 1, ciphertexts: 1n }]);
  },
  "v1 PENDING_PURGE": async (env: Env) => {
    await SETUPS["v1 DECRYPT_ONLY, held by a dataset"](env);
    advanceDays(env, GRACE_DAYS);
    await purgeNow(env);
  },
  "v1 PURGED": async (env: Env) => {
    await SETUPS["v1 PENDING_PURGE"](env);
    await report(env, []);
    await purgeNow(env);
  },
  "v1 REVOKED": async (env: Env) => {
    await SETUPS["v1 DECRYPT_ONLY"](env);
    await clients(env).keys.revokeDekVersion({ ...key(env), dekVersion: 1 });
  },
} as const;
type SetupName = keyof typeof SETUPS;

const ACTIONS = {
  "RevokeKey": (env: Env) => clients(env).keys.revokeKey(key(env)),
  "RestoreKey": (env: Env) => clients(env).keys.restoreKey(key(env)),
  "RotateKey": (env: Env) => clients(env).keys.rotateKey(key(env)),
  "UpdateKey": (env: Env) => clients(env).keys.updateKey({ ...key(env), updateMask: create(FieldMaskSchema, { paths: ["description"] }), description: "x" }),
  "GenerateDataKey": (env: Env) => clients(env).dataKeys.generateDataKey(key(env)),
  "Decrypt of v1": (env: Env) => clients(env).dataKeys.decrypt({ ...key(env), reference: env.reference }),
  "RevokeDekVersion v1": (env: Env) => clients(env).keys.revokeDekVersion({ ...key(env), dekVersion: 1 }),
  "the destruction job": destroyNow,
  "the purge job": purgeNow,
  "the purge job after the grace period": async (env: Env) => {
    advanceDays(env, GRACE_DAYS);
    return purgeNow(env);
  },
  "the last dataset reporting zero, then the purge job": async (env: Env) => {
    await report(env, []);
    return purgeNow(env);
  },
  "revocation and destruction of the key": async (env: Env) => {
    await clients(env).keys.revokeKey(key(env));
    advanceDays(env, WAITING_DAYS);
    return destroyNow(env);
  },
} as const;
type ActionName = keyof typeof ACTIONS;

type Outcome =
  | { readonly to: string; readonly cause: string }
  | { readonly refused: keyof typeof ErrorReason; readonly code: Code; readonly field?: string }
  | { readonly unchanged: true };

interface Row {
  readonly from: SetupName;
  readonly action: ActionName;
  readonly outcome: Outcome;
}

const to = (state: string, cause: string): Outcome => ({ to: state, cause });
const refused = (reason: keyof typeof ErrorReason, code = Code.FailedPrecondition, field?: string): Outcome =>
  field === undefined ? { refused: reason, code } : { refused: reason, code, field };
const unchanged: Outcome = { unchanged: true };

const ROWS: readonly Row[] = [
  // Key: the transitions there are.
  { from: "key ENABLED", action: "RevokeKey", outcome: to("REVOKED", "revoke") },
  { from: "key REVOKED", action: "RestoreKey", outcome: to("ENABLED", "restore") },
  { from: "key REVOKED, waiting period over", action: "the destruction job", outcome: to("DESTROYED", "destroy") },
  // Key: everything else.
  { from: "key ENABLED", action: "RestoreKey", outcome: refused("INVALID_STATE_TRANSITION") },
  { from: "key REVOKED, waiting period over", action: "RestoreKey", outcome: refused("INVALID_STATE_TRANSITION") },
  { from: "key DESTROYED", action: "RestoreKey", outcome: refused("KEY_DESTROYED") },
  { from: "key DESTROYED", action: "RevokeKey", outcome: refused("KEY_DESTROYED") },
  { from: "key REVOKED", action: "RevokeKey", outcome: unchanged },
  { from: "key ENABLED", action: "the destruction job", outcome: unchanged },
  { from: "key REVOKED", action: "the destruction job", outcome: unchanged },
  { from: "key REVOKED", action: "RotateKey", outcome: refused("KEY_REVOKED") },
  { from: "key DESTROYED", action: "RotateKey", outcome: refused("KEY_DESTROYED") },
  { from: "key REVOKED", action: "UpdateKey", outcome: refused("KEY_REVOKED") },
  { from: "key DESTROYED", action: "UpdateKey", outcome: refused("KEY_DESTROYED") },
  { from: "key REVOKED", action: "GenerateDataKey", outcome: refused("KEY_REVOKED") },
  { from: "key DESTROYED", action: "GenerateDataKey", outcome: refused("KEY_DESTROYED") },
  { from: "key REVOKED", action: "Decrypt of v1", outcome: refused("KEY_REVOKED") },
  { from: "key DESTROYED", action: "Decrypt of v1", outcome: refused("KEY_DESTROYED") },
  // DEK version 1: the transitions there are.
  { from: "v1 PRIMARY", action: "RotateKey", outcome: to("DECRYPT_ONLY", "rotate") },
  { from: "v1 DECRYPT_ONLY, held by a dataset", action: "the purge job after the grace period", outcome: to("PENDING_PURGE", "grace-over") },
  { from: "v1 PENDING_PURGE", action: "the last dataset reporting zero, then the purge job", outcome: to("PURGED", "purge") },
  { from: "v1 PRIMARY", action: "RevokeDekVersion v1", outcome: to("REVOKED", "revoke-version") },
  { from: "v1 DECRYPT_ONLY", action: "RevokeDekVersion v1", outcome: to("REVOKED", "revoke-version") },
  { from: "v1 PENDING_PURGE", action: "RevokeDekVersion v1", outcome: to("REVOKED", "revoke-version") },
  { from: "v1 PRIMARY", action: "revocation and destruction of the key", outcome: to("PURGED", "destroy-key") },
  { from: "v1 DECRYPT_ONLY", action: "revocation and destruction of the key", outcome: to("PURGED", "destroy-key") },
  { from: "v1 PENDING_PURGE", action: "revocation and destruction of the key", outcome: to("PURGED", "destroy-key") },
  { from: "v1 REVOKED", action: "revocation and destruction of the key", outcome: to("PURGED", "destroy-key") },
  // DEK version 1: everything else.
  { from: "v1 PURGED", action: "RevokeDekVersion v1", outcome: refused("INVALID_STATE_TRANSITION", Code.FailedPrecondition, "dek_version") },
  { from: "v1 REVOKED", action: "RevokeDekVersion v1", outcome: unchanged },
  { from: "v1 PRIMARY", action: "the purge job after the grace period", outcome: unchanged },
  { from: "v1 DECRYPT_ONLY, held by a dataset", action: "the purge job", outcome: unchanged },
  { from: "v1 PENDING_PURGE", action: "the purge job after the grace period", outcome: unchanged },
  { from: "v1 REVOKED", action: "the purge job after the grace period", outcome: unchanged },
  { from: "v1 PURGED", action: "RotateKey", outcome: unchanged },
  { from: "v1 PURGED", action: "Decrypt of v1", outcome: refused("DEK_VERSION_UNUSABLE", Code.FailedPrecondition, "reference") },
  { from: "v1 REVOKED", action: "Decrypt of v1", outcome: refused("DEK_VERSION_REVOKED", Code.FailedPrecondition, "reference") },
];

const describeOutcome = (outcome: Outcome) =>
  "to" in outcome ? `→ ${outcome.to}` : "refused" in outcome ? `is refused with ${outcome.refused}` : "changes nothing";

describe.each(engines)("key and DEK-version state machines on $name", (engine) => {
  let kms: TestKms;
  let rowNumber = 0;
  beforeAll(async () => {
    kms = await createTestKms(engine);
  });
  afterAll(async () => {
    await kms?.close();
  });

  const stateOf = async (env: Env, subject: "key" | "v1") =>
    subject === "key" ? (await keyRow(kms.database.db, TENANT, env.keyId)).state : (await dekRows(kms.database.db, TENANT, env.keyId))[0]!.state;

  it.each(ROWS.map((row) => [row.from, row.action, describeOutcome(row.outcome), row] as const))("%s, %s %s", async (from, action, _title, row) => {
    const env: Env = { kms, keyId: `row${String(++rowNumber).padStart(2, "0")}`, reference: new Uint8Array() };
    const subject = from.startsWith("key") ? "key" : "v1";
    await SETUPS[from](env);
    const before = await stateOf(env, subject);
    expect(from).toContain(before); // the setup reached the state the row starts from
    const eventsBefore = await eventsOf(kms.database.db, TENANT, env.keyId);

    const outcome = row.outcome;
    if ("refused" in outcome) {
      const expected = { code: outcome.code, reason: outcome.refused };
      await expectRefusal(ACTIONS[action](env), outcome.field === undefined ? expected : { ...expected, field: outcome.field });
      expect(await stateOf(env, subject)).toBe(before);
      expect(await eventsOf(kms.database.db, TENANT, env.keyId)).toEqual(eventsBefore);
    } else if ("unchanged" in outcome) {
      await ACTIONS[action](env);
      expect(await stateOf(env, subject)).toBe(before);
    } else {
      await ACTIONS[action](env);
      expect(await stateOf(env, subject)).toBe(outcome.to);
    }
  });

  it("exercises every documented transition, and only documented ones", () => {
    const observed = (subject: "key" | "v1") =>
      ROWS.filter((row) => row.from.startsWith(subject) && "to" in row.outcome)
        .map((row) => {
          const outcome = row.outcome as { to: string; cause: string };
          return `${/(ENABLED|REVOKED|DESTROYED|PRIMARY|DECRYPT_ONLY|PENDING_PURGE|PURGED)/.exec(row.from)![1]} → ${outcome.to} (${outcome.cause})`;
        })
        .sort();
    const documented = (table: readonly { from: string; to: string; cause: string }[]) => table.map((t) => `${t.from} → ${t.to} (${t.cause})`).sort();
    expect(observed("key")).toEqual(documented(KEY_TRANSITIONS));
    expect(observed("v1")).toEqual(documented(DEK_VERSION_TRANSITIONS));
  });
});
