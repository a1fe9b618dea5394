export {
  countByScan,
  reencryptDataset,
  type InventoryReporter,
  type RecordUpdate,
  type ReencryptionFailure,
  type ReencryptionOptions,
  type ReencryptionProgress,
  type ReencryptionResult,
  type ReencryptionSource,
  type ReencryptionWriter,
  type SourceRecord,
} from "./reencrypt.js";
export { createFileCheckpointStore, createMemoryCheckpointStore, type CheckpointStore, type ReencryptionCheckpoint } from "./checkpoint.js";
export { createTerminalProgress, formatProgress, type TerminalProgress, type TerminalProgressOptions } from "./progress.js";
