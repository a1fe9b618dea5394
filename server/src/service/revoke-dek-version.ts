/**
 * RevokeDekVersion: one DEK version (say a compromised one) stops decrypting
 * from the next call on — Decrypt reads the version's state in its one query
 * and answers DEK_VERSION_REVOKED — while the key keeps working with its
 * other versions. A primary version is first rotated away, in the same
 * transaction, so the key is never without a primary. The version is
 * reported (state REVOKED, revoke_time, a DEK_VERSION_REVOKED event). Its
 * wrapped material stays until the key is destroyed: it is never served again,
 * and erasing it early would gain nothing against whoever already holds the
 * plaintext (see docs/decisions/0041).
 */
import { requireValidId } from "../domain/identifiers.js";
import type { DekVersionState, TenantKey } from "../domain/key-model.js";
import { assertKeyManageable } from "../domain/key-rules.js";
import { dekVersionRevocation } from "../domain/key-state-machine.js";
import { invalidField, KmsError } from "../domain/kms-error.js";
import { findDekVersion, updateDekVersion } from "../storage/dek-version.repository.js";
import { appendKeyEvent } from "../storage/key-event.repository.js";
import { rotateDekInTransaction } from "./dek-rotation.js";
import type { KmsContext } from "./kms-context.js";
import { readKeyRow, readTenantKey } from "./key-reader.js";

export interface RevokeDekVersionInput {
  readonly tenantId: string;
  readonly keyId: string;
  readonly dekVersion: number;
}

export async function revokeDekVersion(context: KmsContext, input: RevokeDekVersionInput): Promise<TenantKey> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  const keyId = requireValidId("key_id", input.keyId);
  const dekVersion = input.dekVersion;
  if (!Number.isSafeInteger(dekVersion) || dekVersion < 1) throw invalidField("dek_version", "must be a DEK version number, 1 or more");

  await context.db.transaction().execute(async (tx) => {
    const row = await readKeyRow(tx, tenantId, keyId, true);
    assertKeyManageable({ tenantId, keyId, state: row.state as TenantKey["state"] });
    const version = await findDekVersion(tx, tenantId, keyId, dekVersion);
    if (version === undefined) {
      throw new KmsError("DEK_VERSION_NOT_FOUND", `dek_version: key ${keyId} has no DEK version ${dekVersion}`, { field: "dek_version" });
    }
    const action = dekVersionRevocation(keyId, dekVersion, version.state as DekVersionState);
    if (action === "already-revoked") return;
    const now = context.clock.now();
    if (action === "rotate-then-revoke") await rotateDekInTransaction(context, tx, row, now);
    await updateDekVersion(tx, tenantId, keyId, dekVersion, { state: "REVOKED", revoke_time: now });
    await appendKeyEvent(tx, { tenantId, keyId, type: "DEK_VERSION_REVOKED", dekVersion, time: now });
  });
  return readTenantKey(context.db, tenantId, keyId);
}
