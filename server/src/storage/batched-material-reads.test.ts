import { describe, expect, it } from "vitest";
import { type BatchStatementRunner, createBatchedMaterialRead } from "./batched-material-reads.js";

/** A statement runner that answers one row per read (keyed by tenant) and fails any statement holding "poison". */
function recordingRunner(): { run: BatchStatementRunner; statements: string[][] } {
  const statements: string[][] = [];
  const run: BatchStatementRunner = async (_name, _text, values) => {
    const tenants = values[0] as string[];
    statements.push(tenants);
    if (tenants.includes("poison")) throw new Error('value "4294967295" is out of range for type integer');
    return tenants.map((tenantId, index) => ({ readIndex: String(index + 1), keyState: `row-of-${tenantId}` }));
  };
  return { run, statements };
}

describe("batched material reads", () => {
  it("reads asked for in one turn share one statement, and each caller gets its own row", async () => {
    const { run, statements } = recordingRunner();
    const read = createBatchedMaterialRead(run);
    const rows = await Promise.all(["a", "b", "c"].map((tenant) => read(tenant, "k", "primary")));
    expect(statements).toEqual([["a", "b", "c"]]);
    expect(rows.map((row) => row?.keyState)).toEqual(["row-of-a", "row-of-b", "row-of-c"]);
    expect(rows[0]).not.toHaveProperty("readIndex");
  });

  it("one caller's failing input fails only that caller: the others are read again alone", async () => {
    const { run, statements } = recordingRunner();
    const read = createBatchedMaterialRead(run);
    const outcomes = await Promise.allSettled(["a", "poison", "c"].map((tenant) => read(tenant, "k", 1)));
    expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(outcomes[0]).toMatchObject({ value: { keyState: "row-of-a" } });
    expect(outcomes[2]).toMatchObject({ value: { keyState: "row-of-c" } });
    expect(statements).toEqual([["a", "poison", "c"], ["a"], ["poison"], ["c"]]);
  });

  it("a read with no row answers undefined", async () => {
    const read = createBatchedMaterialRead(async () => []);
    expect(await read("t", "k", 3)).toBeUndefined();
  });
});
