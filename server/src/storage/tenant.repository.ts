import type { Executor, TenantRow } from "./database.js";

/** Records the tenant unless it is already known; true when this call inserted it. */
export async function insertTenantIfAbsent(db: Executor, tenantId: string, now: Date): Promise<boolean> {
  const inserted = await db
    .insertInto("tenants")
    .values({ tenant_id: tenantId, create_time: now })
    .onConflict((conflict) => conflict.column("tenant_id").doNothing())
    .returning("tenant_id")
    .executeTakeFirst();
  return inserted !== undefined;
}

export async function tenantExists(db: Executor, tenantId: string): Promise<boolean> {
  const row = await db.selectFrom("tenants").select("tenant_id").where("tenant_id", "=", tenantId).executeTakeFirst();
  return row !== undefined;
}

export async function findTenant(db: Executor, tenantId: string): Promise<TenantRow | undefined> {
  return db.selectFrom("tenants").selectAll().where("tenant_id", "=", tenantId).executeTakeFirst();
}
