/** Key `index` belongs to tenant `index mod tenants`: 100 tenants of 10 keys, then of 1,000. */
export function tenantIdFor(index: number, tenants: number): string {
  return `bench-t${String(index % tenants).padStart(3, "0")}`;
}

export function keyIdFor(index: number): string {
  return `key-${String(index).padStart(6, "0")}`;
}
