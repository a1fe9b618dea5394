/**
 * ListKeys: keyset pagination by key_id. The page token is opaque to callers
 * but carries the filter it was made under, so a token replayed with another
 * filter is refused rather than silently skipping keys.
 */
import { isValidId, requireValidId } from "../domain/identifiers.js";
import { KEY_STATES, type KeyState, type TenantKey } from "../domain/key-model.js";
import { invalidField } from "../domain/kms-error.js";
import { listKeys as listKeyRows } from "../storage/key.repository.js";
import { tenantExists } from "../storage/tenant.repository.js";
import type { KmsContext } from "./kms-context.js";
import { readTenantKeys, tenantNotFound } from "./key-reader.js";

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

export interface ListKeysInput {
  readonly tenantId: string;
  readonly pageSize: number;
  readonly pageToken: string;
  readonly state?: KeyState | undefined;
}

export interface KeyPage {
  readonly keys: TenantKey[];
  readonly nextPageToken: string;
}

export async function listKeys(context: KmsContext, input: ListKeysInput): Promise<KeyPage> {
  const tenantId = requireValidId("tenant_id", input.tenantId);
  if (!Number.isInteger(input.pageSize) || input.pageSize < 0 || input.pageSize > MAX_PAGE_SIZE) {
    throw invalidField("page_size", `must be from 1 to ${MAX_PAGE_SIZE}, or 0 for the default of ${DEFAULT_PAGE_SIZE}`, {
      max: String(MAX_PAGE_SIZE),
    });
  }
  const limit = input.pageSize === 0 ? DEFAULT_PAGE_SIZE : input.pageSize;
  const afterKeyId = input.pageToken === "" ? undefined : decodePageToken(input.pageToken, input.state);
  if (!(await tenantExists(context.db, tenantId))) throw tenantNotFound(tenantId);

  const rows = await listKeyRows(context.db, tenantId, {
    ...(input.state === undefined ? {} : { state: input.state }),
    ...(afterKeyId === undefined ? {} : { afterKeyId }),
    limit: limit + 1,
  });
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const nextPageToken = rows.length > limit && last !== undefined ? encodePageToken(last.key_id, input.state) : "";
  return { keys: await readTenantKeys(context.db, page), nextPageToken };
}

interface PageToken {
  readonly v: 1;
  readonly after: string;
  readonly state: KeyState | null;
}

function encodePageToken(afterKeyId: string, state: KeyState | undefined): string {
  const token: PageToken = { v: 1, after: afterKeyId, state: state ?? null };
  return Buffer.from(JSON.stringify(token), "utf8").toString("base64url");
}

function decodePageToken(token: string, state: KeyState | undefined): string {
  const refuse = () => invalidField("page_token", "must be a next_page_token returned by ListKeys with the same filter");
  if (token.length > 256) throw refuse();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw refuse();
  }
  const candidate = parsed as Partial<PageToken> | null;
  if (
    candidate === null ||
    typeof candidate !== "object" ||
    candidate.v !== 1 ||
    typeof candidate.after !== "string" ||
    !isValidId(candidate.after) ||
    !(candidate.state === null || KEY_STATES.includes(candidate.state as KeyState)) ||
    (candidate.state ?? undefined) !== state
  ) {
    throw refuse();
  }
  return candidate.after;
}
