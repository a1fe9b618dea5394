import { describe, expect, it } from "vitest";
import { type BatchStatementRunner, createBatchedMaterialRead } from "./batched-material-reads.js";

/** A statement runner that answers one row per read (keyed by tenant) and fails any statement holding "poison". */
function recordingRunner(): { run: BatchStatementRunner; statements: string[][] } {
  const statements: string[][] = [];
  const run: BatchStatementRunner = async (_name, _text, values) => {
    const tenants = values[0] as string[];
    statements.push(tenants);
    if (tenants.includes("poison")) throw new Error('value "4294967295" is out of range for type integer');
    return tenants.map((tenantId, index) => ({
      readIndex: String(index + 1),
      generation: String(index + 7),
      keyUid: tenantId === "absent" ? null : Buffer.from(tenantId),
      keyState: tenantId === "absent" ? null : `row-of-${tenantId}`,
    }));
  };
  return { run, statements };
}

describe("batched material reads", () => {
  it("reads asked for in one turn share one statement, and each caller gets its own row", async () => {
    const { run, statements } = recordingRunner();
    const read = createBatchedMaterialRead(run);
    const results = await Promise.all(["a", "b", "c"].map((tenant) => read(tenant, "k", "primary", true)));
    expect(statements).toEqual([["a", "b", "c"]]);
    expect(results.map((result) => result.row?.keyState)).toEqual(["row-of-a", "row-of-b", "row-of-c"]);
    expect(results.map((result) => result.generation)).toEqual([7, 8, 9]);
    expect(results[0]?.row).not.toHaveProperty("readIndex");
    expect(results[0]?.row).not.toHaveProperty("generation");
  });

  it("one caller's failing input fails only that caller: the others are read again alone", async () => {
    const { run, statements } = recordingRunner();
    const read = createBatchedMaterialRead(run);
    const outcomes = await Promise.allSettled(["a", "poison", "c"].map((tenant) => read(tenant, "k", 1, true)));
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(outcomes[0]).toMatchObject({ value: { row: { keyState: "row-of-a" } } });
    expect(outcomes[2]).toMatchObject({ value: { row: { keyState: "row-of-c" } } });
    expect(statements).toEqual([["a", "poison", "c"], ["a"], ["poison"], ["c"]]);
  });

  it("a read whose row is absent answers no row but still its tenant's generation", async () => {
    const { run } = recordingRunner();
    const read = createBatchedMaterialRead(run);
    expect(await read("absent", "k", 3, true)).toEqual({ row: undefined, generation: 7 });
  });

  it("a statement that leaves a read without its result row fails that read instead of answering nothing", async () => {
    const read = createBatchedMaterialRead(async () => []);
    await expect(read("t", "k", 3, true)).rejects.toThrow("returned no row for read 1");
  });
});
