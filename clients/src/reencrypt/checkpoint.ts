import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

/** Where a re-encryption run stands: every record up to `after` (by id) is done. */
export interface ReencryptionCheckpoint<Id extends string | number> {
  readonly datasetId: string;
  readonly after: Id;
  /** The primary version the run re-encrypts to; a checkpoint for another primary is not resumed. */
  readonly primaryDekVersion: number;
  readonly scanned: number;
  readonly reencrypted: number;
  readonly failed: number;
}

/** Keeps a run's checkpoint between batches, so a stopped run resumes where it was. */
export interface CheckpointStore<Id extends string | number> {
  load(): Promise<ReencryptionCheckpoint<Id> | undefined>;
  save(checkpoint: ReencryptionCheckpoint<Id>): Promise<void>;
  /** Called when the run has finished and reported. */
  clear(): Promise<void>;
}

/** A checkpoint in a JSON file, replaced atomically (write, then rename). */
export function createFileCheckpointStore<Id extends string | number>(path: string): CheckpointStore<Id> {
  return {
    async load() {
      try {
        return JSON.parse(await readFile(path, "utf8")) as ReencryptionCheckpoint<Id>;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw error;
      }
    },
    async save(checkpoint) {
      await mkdir(dirname(path), { recursive: true });
      const temporary = `${path}.${process.pid}.tmp`;
      await writeFile(temporary, JSON.stringify(checkpoint));
      await rename(temporary, path);
    },
    async clear() {
      await rm(path, { force: true });
    },
  };
}

/** A checkpoint kept in memory (tests, or runs that need not survive the process). */
export function createMemoryCheckpointStore<Id extends string | number>(): CheckpointStore<Id> & { current(): ReencryptionCheckpoint<Id> | undefined } {
  let saved: ReencryptionCheckpoint<Id> | undefined;
  return {
    load: () => Promise.resolve(saved),
    save: (checkpoint) => {
      saved = checkpoint;
      return Promise.resolve();
    },
    clear: () => {
      saved = undefined;
      return Promise.resolve();
    },
    current: () => saved,
  };
}
