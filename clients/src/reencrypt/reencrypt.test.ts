import { describe, expect, it } from "vitest";
import { createFakeKms, type FakeKms } from "../../test/support/fake-kms.js";
import { createKmsClient, type KmsClient } from "../client/kms-client.js";
import { createEnvelopeEncryption, type EnvelopeEncryption } from "../envelope/envelope-encryption.js";
import { describeEnvelope } from "../envelope/envelope-format.js";
import { KmsError } from "../errors/kms-error.js";
import { createMemoryCheckpointStore } from "./checkpoint.js";
import { createTerminalProgress, formatProgress } from "./progress.js";
import { reencryptDataset, type ReencryptionProgress, type ReencryptionSource, type ReencryptionWriter } from "./reencrypt.js";

/** A table in memory: id → ciphertext, read by ascending id, written with compare-and-set. */
function memoryTable(rows: Map<number, Buffer>) {
  const reads: (number | undefined)[] = [];
  const writes = new Map<number, number>();
  const source: ReencryptionSource<number> = {
    async readBatch(after, limit) {
      reads.push(after);
      return [...rows.entries()]
        .filter(([id]) => after === undefined || id > after)
        .sort(([a], [b]) => a - b)
        .slice(0, limit)
        .map(([id, ciphertext]) => ({ id, ciphertext }));
    },
  };
  const writer: ReencryptionWriter<number> = {
    async write(updates) {
      let written = 0;
      for (const update of updates) {
        if (!rows.get(update.id)?.equals(update.previous)) continue;
        rows.set(update.id, update.ciphertext);
        writes.set(update.id, (writes.get(update.id) ?? 0) + 1);
        written++;
      }
      return written;
    },
  };
  return { source, writer, reads, writes };
}

async function setup(records = 50): Promise<{ kms: FakeKms; client: KmsClient; envelope: EnvelopeEncryption; rows: Map<number, Buffer> }> {
  const kms = createFakeKms();
  kms.createKey("acme", "pii");
  const client = createKmsClient({ transport: kms.transport, retry: false });
  const envelope = createEnvelopeEncryption({ kms: client, cache: { maxAgeMs: 60_000, events: false } });
  const rows = new Map<number, Buffer>();
  // ids 1..records: the first half under v1, the rest under v2; v3 becomes primary
  for (let id = 1; id <= records; id++) {
    if (id === Math.floor(records / 2) + 1) {
      kms.rotate("acme", "pii");
      envelope.cache.clear();
    }
    rows.set(id, await envelope.encrypt("acme", "pii", Buffer.from(`row ${id}`), { row: String(id) }));
  }
  kms.rotate("acme", "pii");
  envelope.cache.clear();
  return { kms, client, envelope, rows };
}

const versionsOf = (rows: Map<number, Buffer>) => {
  const counts = new Map<number, number>();
  for (const ciphertext of rows.values()) {
    const { dekVersion } = describeEnvelope(ciphertext);
    counts.set(dekVersion, (counts.get(dekVersion) ?? 0) + 1);
  }
  return counts;
};

describe("re-encryption helper", () => {
  it("re-encrypts every record not under the primary DEK version, in batches, with bounded concurrency, keeping each record's context", async () => {
    const { envelope, rows, client } = await setup(50);
    const table = memoryTable(rows);
    let inFlight = 0;
    let peak = 0;
    const counting: EnvelopeEncryption = {
      ...envelope,
      async decrypt(ciphertext, context, expected) {
        inFlight++;
        peak = Math.max(peak, inFlight);
        try {
          await new Promise((resolve) => setTimeout(resolve, 1));
          return await envelope.decrypt(ciphertext, context, expected);
        } finally {
          inFlight--;
        }
      },
    };
    const result = await reencryptDataset({
      envelope: counting,
      tenantId: "acme",
      keyId: "pii",
      datasetId: "customers",
      source: table.source,
      writer: table.writer,
      context: (record) => ({ row: String(record.id) }),
      batchSize: 20,
      concurrency: 3,
      inventory: client.datasets,
    });
    expect(result).toMatchObject({ primaryDekVersion: 3, scanned: 50, reencrypted: 50, failed: 0, conflicts: 0, reported: true });
    expect(peak).toBe(3);
    expect(table.reads).toEqual([undefined, 20, 40, 50, undefined, 20, 40, 50]); // three batches and an empty read, then the counting scan
    expect(versionsOf(rows)).toEqual(new Map([[3, 50]]));
    for (const [id, ciphertext] of rows) expect((await envelope.decrypt(ciphertext, { row: String(id) })).toString()).toBe(`row ${id}`);
    await envelope.close();
  });

  it("reports the remaining counts per DEK version for its dataset with ReportInventory, a record it could not re-encrypt still counted under its version", async () => {
    const { kms, envelope, rows, client } = await setup(10);
    const broken = Buffer.from(rows.get(2) as Buffer);
    broken[broken.length - 1] = (broken[broken.length - 1] as number) ^ 1;
    rows.set(2, broken);
    const table = memoryTable(rows);
    const result = await reencryptDataset({
      envelope,
      tenantId: "acme",
      keyId: "pii",
      datasetId: "customers",
      source: table.source,
      writer: table.writer,
      context: (record) => ({ row: String(record.id) }),
      inventory: client.datasets,
    });
    expect(result.failed).toBe(1);
    expect(result.failures).toEqual([{ id: 2, reason: "AUTHENTICATION_FAILED" }]);
    expect(kms.reports).toEqual([
      {
        tenantId: "acme",
        keyId: "pii",
        datasetId: "customers",
        counts: [expect.objectContaining({ dekVersion: 1, ciphertexts: 1n }), expect.objectContaining({ dekVersion: 3, ciphertexts: 9n })],
      },
    ]);
    await envelope.close();
  });

  it("resumes from its checkpoint after a stop: no record is re-encrypted twice, and nothing is reported until the run completes", async () => {
    const { kms, envelope, rows, client } = await setup(50);
    const table = memoryTable(rows);
    const checkpoint = createMemoryCheckpointStore<number>();
    const abort = new AbortController();
    const options = {
      envelope,
      tenantId: "acme",
      keyId: "pii",
      datasetId: "customers",
      source: table.source,
      writer: table.writer,
      context: (record: { id: number }) => ({ row: String(record.id) }),
      batchSize: 10,
      checkpoint,
      inventory: client.datasets,
    };
    const stopped = await reencryptDataset({
      ...options,
      signal: abort.signal,
      onProgress: (progress) => {
        if (progress.scanned >= 20) abort.abort();
      },
    }).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(stopped).toBeInstanceOf(KmsError);
    expect(checkpoint.current()).toMatchObject({ after: 20, primaryDekVersion: 3, scanned: 20, reencrypted: 20 });
    expect(kms.reports).toEqual([]);

    const result = await reencryptDataset(options);
    expect(result).toMatchObject({ resumedFrom: 20, scanned: 50, reencrypted: 50 });
    expect([...table.writes.values()].every((n) => n === 1)).toBe(true);
    expect(table.writes.size).toBe(50);
    expect(kms.reports).toHaveLength(1);
    expect(checkpoint.current()).toBeUndefined();
    await envelope.close();
  });

  it("does not resume a checkpoint made for another primary version: it starts over", async () => {
    const { envelope, rows } = await setup(10);
    const table = memoryTable(rows);
    const checkpoint = createMemoryCheckpointStore<number>();
    await checkpoint.save({ datasetId: "customers", after: 8, primaryDekVersion: 2, scanned: 8, reencrypted: 8, failed: 0 });
    const result = await reencryptDataset({ envelope, tenantId: "acme", keyId: "pii", datasetId: "customers", source: table.source, writer: table.writer, context: (r) => ({ row: String(r.id) }), checkpoint });
    expect(result).toMatchObject({ resumedFrom: undefined, scanned: 10, reencrypted: 10 });
    await envelope.close();
  });

  it("leaves a record that changed meanwhile alone (compare-and-set) and counts the conflict", async () => {
    const { envelope, rows } = await setup(4);
    const table = memoryTable(rows);
    const writer: ReencryptionWriter<number> = {
      async write(updates) {
        rows.set(1, await envelope.encrypt("acme", "pii", Buffer.from("changed by the application"), { row: "1" }));
        return table.writer.write(updates);
      },
    };
    const result = await reencryptDataset({ envelope, tenantId: "acme", keyId: "pii", datasetId: "customers", source: table.source, writer, context: (r) => ({ row: String(r.id) }) });
    expect(result).toMatchObject({ reencrypted: 3, conflicts: 1 });
    expect((await envelope.decrypt(rows.get(1) as Buffer, { row: "1" })).toString()).toBe("changed by the application");
    expect(result.counts).toEqual(new Map([[3, 4]]));
    await envelope.close();
  });

  it("counts with the source's own countByDekVersion when it has one (no counting scan), and shows a total in its progress", async () => {
    const { envelope, rows } = await setup(10);
    const table = memoryTable(rows);
    const source: ReencryptionSource<number> = { ...table.source, countByDekVersion: async () => versionsOf(rows) };
    const progress: ReencryptionProgress[] = [];
    const result = await reencryptDataset({ envelope, tenantId: "acme", keyId: "pii", datasetId: "d", source, writer: table.writer, context: (r) => ({ row: String(r.id) }), onProgress: (p) => progress.push(p) });
    expect(table.reads).toEqual([undefined, 10]);
    expect(result.counts).toEqual(new Map([[3, 10]]));
    expect(progress[0]).toMatchObject({ phase: "counting" });
    expect(progress.find((p) => p.phase === "reencrypting")?.total).toBe(10);
    expect(progress.at(-1)).toMatchObject({ phase: "done", scanned: 10 });
    await envelope.close();
  });
});

describe("progress display", () => {
  const progress: ReencryptionProgress = {
    phase: "reencrypting",
    datasetId: "customers",
    primaryDekVersion: 3,
    total: 10_000,
    scanned: 4_500,
    reencrypted: 4_000,
    failed: 2,
    conflicts: 0,
    remaining: new Map([
      [1, 3_000],
      [2, 2_500],
      [3, 4_500],
    ]),
    elapsedMs: 3_000,
  };

  it("formats one line: bar, records of total, ETA, rate, failures and what remains per DEK version (primary starred)", () => {
    expect(formatProgress(progress)).toBe(
      "reencrypting [#########-----------]  45% · 4,500/10,000 records · ETA 4s · 4,000 re-encrypted · 1,500/s · 2 failed · v1 3,000 v2 2,500 v3* 4,500",
    );
    expect(formatProgress(progress, 40)).toHaveLength(40);
  });

  it("redraws one line in place on a terminal, and writes plain lines elsewhere", () => {
    const written: string[] = [];
    const stream = { write: (text: string) => written.push(text), isTTY: true, columns: 200 } as unknown as NodeJS.WriteStream;
    const tty = createTerminalProgress({ stream, intervalMs: 0 });
    tty.update(progress);
    tty.update({ ...progress, phase: "done" });
    tty.finish();
    expect(written[0]?.startsWith("\r\u001b[2K")).toBe(true);
    expect(written.at(-1)).toBe("\n");

    const lines: string[] = [];
    const log = createTerminalProgress({ stream: { write: (text: string) => lines.push(text), isTTY: false } as unknown as NodeJS.WriteStream });
    log.update(progress);
    log.update({ ...progress, scanned: 4_600 }); // within the log interval: not written
    log.update({ ...progress, phase: "done" });
    expect(lines).toHaveLength(2);
    expect(lines.every((line) => line.endsWith("\n") && !line.includes("\r"))).toBe(true);
  });
});
