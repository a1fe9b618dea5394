import { Code } from "@connectrpc/connect";
import { isEnvelopeError } from "../errors/envelope-error.js";
import { KmsError } from "../errors/kms-error.js";
import { ErrorReason, StoreKind } from "../gen.js";
import type { EncryptionContext } from "../envelope/canonical-context.js";
import type { EnvelopeEncryption } from "../envelope/envelope-encryption.js";
import { describeEnvelope } from "../envelope/envelope-format.js";
import type { CheckpointStore } from "./checkpoint.js";

export interface SourceRecord<Id extends string | number> {
  readonly id: Id;
  readonly ciphertext: Uint8Array;
}

/** Where the records come from: read in ascending id order, a batch at a time (keyset pagination). */
export interface ReencryptionSource<Id extends string | number> {
  /** At most `limit` records with an id greater than `after` (all ids when undefined), ascending by id. */
  readBatch(after: Id | undefined, limit: number): Promise<readonly SourceRecord<Id>[]>;
  /**
   * Optional: how many ciphertexts the dataset holds under each DEK version,
   * counted where the data is (in SQL, say, from the envelope's fixed DEK
   * version offset). Without it the helper counts with a read-only scan.
   */
  countByDekVersion?(): Promise<ReadonlyMap<number, number>>;
}

export interface RecordUpdate<Id extends string | number> {
  readonly id: Id;
  readonly ciphertext: Buffer;
  /** What the record held when read: write only if it still does (compare-and-set). */
  readonly previous: Uint8Array;
}

export interface ReencryptionWriter<Id extends string | number> {
  /** Stores new ciphertexts; returns how many it wrote (the rest changed meanwhile and were left alone). */
  write(updates: readonly RecordUpdate<Id>[]): Promise<number>;
}

/** The inventory call (DatasetService); a KmsClient's `datasets` fits. */
export interface InventoryReporter {
  reportInventory(request: {
    tenantId: string;
    keyId: string;
    datasetId: string;
    counts: { dekVersion: number; ciphertexts: bigint }[];
  }): Promise<unknown>;
  registerDataset?(request: { tenantId: string; keyId: string; datasetId: string; storeKind: StoreKind; description: string }): Promise<unknown>;
}

export interface ReencryptionProgress {
  readonly phase: "counting" | "reencrypting" | "reporting" | "done";
  readonly datasetId: string;
  readonly primaryDekVersion: number;
  /** Records in the dataset, when known (from countByDekVersion). */
  readonly total: number | undefined;
  readonly scanned: number;
  readonly reencrypted: number;
  readonly failed: number;
  /** Updates not written because the record changed meanwhile. */
  readonly conflicts: number;
  /** Ciphertexts per DEK version as far as known now (exact once the phase is "done"). */
  readonly remaining: ReadonlyMap<number, number>;
  readonly elapsedMs: number;
}

export interface ReencryptionFailure<Id extends string | number> {
  readonly id: Id;
  /** An EnvelopeError kind or a KmsError reason name. */
  readonly reason: string;
}

export interface ReencryptionOptions<Id extends string | number> {
  readonly envelope: EnvelopeEncryption;
  readonly tenantId: string;
  readonly keyId: string;
  /** The dataset's id in the service's inventory. */
  readonly datasetId: string;
  readonly source: ReencryptionSource<Id>;
  readonly writer: ReencryptionWriter<Id>;
  /** The encryption context each record was encrypted with (and will be again). */
  readonly context?: (record: SourceRecord<Id>) => EncryptionContext;
  /** Records read per batch. Default 500. */
  readonly batchSize?: number;
  /** Records re-encrypted at once within a batch. Default 8. */
  readonly concurrency?: number;
  readonly checkpoint?: CheckpointStore<Id>;
  /** Where the final counts go; omit to only return them. */
  readonly inventory?: InventoryReporter;
  /** Registers the dataset first (an existing registration is fine). */
  readonly register?: { readonly storeKind: StoreKind; readonly description?: string };
  readonly onProgress?: (progress: ReencryptionProgress) => void;
  readonly signal?: AbortSignal;
}

export interface ReencryptionResult<Id extends string | number> {
  readonly primaryDekVersion: number;
  readonly scanned: number;
  readonly reencrypted: number;
  readonly conflicts: number;
  readonly failed: number;
  /** The first failures (at most 100), by id. */
  readonly failures: readonly ReencryptionFailure<Id>[];
  /** Ciphertexts per DEK version after the run: what was reported. */
  readonly counts: ReadonlyMap<number, number>;
  /** Records whose header could not be read (counted under no version). */
  readonly unreadable: number;
  readonly reported: boolean;
  readonly resumedFrom: Id | undefined;
}

const MAX_FAILURES_KEPT = 100;

/**
 * Re-encrypts every record of a dataset that is not under the key's primary
 * DEK version, in batches read by ascending id, `concurrency` records at a
 * time, saving a checkpoint after each batch's writes (a stopped run resumes
 * after the last finished batch). Then it counts the dataset's ciphertexts
 * per DEK version and reports them with ReportInventory: the service purges
 * a superseded version only once every dataset reports none under it.
 *
 * Counts are reported only from a complete count (never from a partial
 * run), because a version missing from a report counts as zero.
 */
export async function reencryptDataset<Id extends string | number>(options: ReencryptionOptions<Id>): Promise<ReencryptionResult<Id>> {
  const { envelope, tenantId, keyId, datasetId, source, writer } = options;
  const batchSize = positiveInteger("batchSize", options.batchSize ?? 500);
  const concurrency = positiveInteger("concurrency", options.concurrency ?? 8);
  const contextOf = options.context ?? (() => ({}));
  const started = performance.now();

  if (options.register !== undefined && options.inventory?.registerDataset !== undefined) {
    try {
      await options.inventory.registerDataset({ tenantId, keyId, datasetId, storeKind: options.register.storeKind, description: options.register.description ?? "" });
    } catch (error) {
      if (!(error instanceof KmsError && error.reason === ErrorReason.DATASET_ALREADY_EXISTS)) throw error;
    }
  }

  // The primary version: what GenerateDataKey hands out now. Asked of the
  // service, not the cache: a rotation a moment ago may not have reached the
  // cache's event stream yet, and re-encrypting to a stale primary is no use.
  envelope.cache.invalidate({ scope: "primary", tenantId, keyId });
  const probe = await envelope.cache.encryptionKey(tenantId, keyId, 0);
  probe.dek.fill(0);
  const primary = probe.dekVersion;

  const saved = await options.checkpoint?.load();
  const resume = saved !== undefined && saved.datasetId === datasetId && saved.primaryDekVersion === primary ? saved : undefined;
  let after: Id | undefined = resume?.after;
  let scanned = resume?.scanned ?? 0;
  let reencrypted = resume?.reencrypted ?? 0;
  let failed = resume?.failed ?? 0;
  let conflicts = 0;
  const failures: ReencryptionFailure<Id>[] = [];

  let total: number | undefined;
  const remaining = new Map<number, number>();
  const progress = (phase: ReencryptionProgress["phase"]): void =>
    options.onProgress?.({
      phase,
      datasetId,
      primaryDekVersion: primary,
      total,
      scanned,
      reencrypted,
      failed,
      conflicts,
      remaining,
      elapsedMs: performance.now() - started,
    });

  if (source.countByDekVersion !== undefined) {
    progress("counting");
    for (const [version, count] of await source.countByDekVersion()) remaining.set(version, count);
    total = [...remaining.values()].reduce((a, b) => a + b, 0);
  }
  progress("reencrypting");

  for (;;) {
    throwIfAborted(options.signal);
    const batch = await source.readBatch(after, batchSize);
    if (batch.length === 0) break;
    const updates: RecordUpdate<Id>[] = [];
    const moved: number[] = [];
    await forEachLimited(batch, concurrency, async (record) => {
      let version: number;
      try {
        version = describeEnvelope(record.ciphertext).dekVersion;
      } catch {
        failed++;
        if (failures.length < MAX_FAILURES_KEPT) failures.push({ id: record.id, reason: "MALFORMED" });
        return;
      }
      if (version === primary) return;
      try {
        const context = contextOf(record);
        const plaintext = await envelope.decrypt(record.ciphertext, context, { tenantId, keyId });
        try {
          updates.push({ id: record.id, ciphertext: await envelope.encrypt(tenantId, keyId, plaintext, context), previous: record.ciphertext });
          moved.push(version);
        } finally {
          plaintext.fill(0);
        }
      } catch (error) {
        failed++;
        if (failures.length < MAX_FAILURES_KEPT) failures.push({ id: record.id, reason: reasonOf(error) });
      }
    });
    const written = updates.length === 0 ? 0 : await writer.write(updates);
    reencrypted += written;
    conflicts += updates.length - written;
    if (written === updates.length) {
      for (const version of moved) {
        remaining.set(version, Math.max(0, (remaining.get(version) ?? 0) - 1));
        remaining.set(primary, (remaining.get(primary) ?? 0) + 1);
      }
    }
    scanned += batch.length;
    after = (batch[batch.length - 1] as SourceRecord<Id>).id;
    await options.checkpoint?.save({ datasetId, after, primaryDekVersion: primary, scanned, reencrypted, failed });
    progress("reencrypting");
  }

  // The counts to report: from the data itself, after the run.
  progress("counting");
  const { counts, unreadable } =
    source.countByDekVersion !== undefined
      ? { counts: await source.countByDekVersion(), unreadable: 0 }
      : await countByScan(source, { tenantId, keyId, batchSize, ...(options.signal === undefined ? {} : { signal: options.signal }) });
  remaining.clear();
  for (const [version, count] of counts) remaining.set(version, count);
  total = [...counts.values()].reduce((a, b) => a + b, 0) + unreadable;

  let reported = false;
  if (options.inventory !== undefined) {
    progress("reporting");
    await options.inventory.reportInventory({
      tenantId,
      keyId,
      datasetId,
      counts: [...counts.entries()]
        .filter(([, count]) => count > 0)
        .sort(([a], [b]) => a - b)
        .map(([dekVersion, count]) => ({ dekVersion, ciphertexts: BigInt(count) })),
    });
    reported = true;
  }
  await options.checkpoint?.clear();
  progress("done");
  return {
    primaryDekVersion: primary,
    scanned,
    reencrypted,
    conflicts,
    failed,
    failures,
    counts,
    unreadable,
    reported,
    resumedFrom: resume?.after,
  };
}

/**
 * Counts the ciphertexts of one tenant's key per DEK version by reading
 * every record's header. Records that cannot be read, or that name another
 * tenant or key, are `unreadable`: they count under no version of this key.
 */
export async function countByScan<Id extends string | number>(
  source: ReencryptionSource<Id>,
  options: { readonly tenantId: string; readonly keyId: string; readonly batchSize?: number; readonly signal?: AbortSignal },
): Promise<{ counts: Map<number, number>; unreadable: number }> {
  const counts = new Map<number, number>();
  let unreadable = 0;
  let after: Id | undefined;
  for (;;) {
    throwIfAborted(options.signal);
    const batch = await source.readBatch(after, options.batchSize ?? 1_000);
    if (batch.length === 0) break;
    for (const record of batch) {
      try {
        const { tenantId, keyId, dekVersion } = describeEnvelope(record.ciphertext);
        if (tenantId !== options.tenantId || keyId !== options.keyId) unreadable++;
        else counts.set(dekVersion, (counts.get(dekVersion) ?? 0) + 1);
      } catch {
        unreadable++;
      }
    }
    after = (batch[batch.length - 1] as SourceRecord<Id>).id;
  }
  return { counts, unreadable };
}

async function forEachLimited<T>(items: readonly T[], limit: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await run(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function reasonOf(error: unknown): string {
  if (isEnvelopeError(error)) return error.kind;
  if (error instanceof KmsError) return error.reasonName === "UNSPECIFIED" ? error.codeName : error.reasonName;
  return "UNKNOWN";
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw new KmsError({ code: Code.Canceled, reason: ErrorReason.UNSPECIFIED, message: "the re-encryption run was canceled" });
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer`);
  return value;
}

