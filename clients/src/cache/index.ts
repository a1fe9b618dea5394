export {
  cacheKey,
  createDekCache,
  DekCache,
  type DataKeySource,
  type DecryptionKey,
  type DekCacheEventOptions,
  type DekCacheOptions,
  type DekCacheStats,
  type EncryptionKey,
  type EvictionCause,
} from "./dek-cache.js";
export {
  invalidationFor,
  KeyEventWatcher,
  type Invalidation,
  type KeyEventLike,
  type KeyEventSource,
  type KeyEventWatcherOptions,
  type WatcherState,
  type WatcherStats,
} from "./key-event-watcher.js";
