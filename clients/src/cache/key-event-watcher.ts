import { KmsError } from "../errors/kms-error.js";
import { ErrorReason, KeyEventType } from "../gen.js";

/** The fields of a `matih.kms.v1.KeyEvent` the cache acts on. */
export interface KeyEventLike {
  readonly cursor: string;
  readonly tenantId: string;
  readonly keyId: string;
  readonly type: KeyEventType;
  readonly dekVersion: number;
}

/**
 * What the watcher needs from the KMS: `KeyEventService.WatchKeyEvents`,
 * typed structurally (a generated client, or a `createKmsClient` one, fits).
 */
export interface KeyEventSource {
  watchKeyEvents(
    request: { tenantId: string; afterCursor: string },
    options?: { signal?: AbortSignal; timeoutMs?: number },
  ): AsyncIterable<{ event?: KeyEventLike | undefined }>;
}

export type WatcherState = "connecting" | "live" | "down" | "stopped";

export interface KeyEventWatcherOptions {
  readonly source: KeyEventSource;
  /** The tenant to watch, or "-" for every tenant (a privileged identity). */
  readonly tenantId: string;
  readonly onEvent: (event: KeyEventLike) => void;
  /**
   * A stream that has been open this long without an error counts as live
   * even before its first event (a server sends its response headers with
   * the first event). Default 1,000 ms.
   */
  readonly assumeLiveAfterMs?: number;
  /** Reconnect backoff: the first delay, doubled up to `maxBackoffMs`, with full jitter. Defaults 100 / 5,000 ms. */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly now?: () => number;
  readonly random?: () => number;
}

export interface WatcherStats {
  readonly tenantId: string;
  readonly state: WatcherState;
  /** Since when every event is known to reach the cache (undefined: not covered now). */
  readonly coveredSince: number | undefined;
  readonly connects: number;
  readonly eventsReceived: number;
  readonly lastCursor: string | undefined;
  /** The last stream error, as "<code> <reason>". */
  readonly lastError: string | undefined;
}

/**
 * Follows `WatchKeyEvents` for one tenant (or all), reconnecting with backoff
 * and resuming after the last cursor seen, so no event is missed across a
 * reconnect. It tells the cache two things:
 *
 * - `isLive()`: a stream is open now, so a revocation will arrive;
 * - `coveredSince()`: the moment from which every event has reached (or will
 *   reach) the cache. An entry fetched before that moment may have missed its
 *   revocation, so the cache holds it to the short fallback age.
 *
 * Coverage starts anew each time a stream goes live: a resumed stream
 * replays what happened after the cursor (so entries are dropped as soon as
 * the replay arrives), but nothing in the protocol marks the end of the
 * replay, so entries fetched before the stream went live are held to the
 * fallback age rather than trusted. When the server says the cursor is too
 * old (EVENT_CURSOR_EXPIRED), the watcher starts over from now.
 */
export class KeyEventWatcher {
  readonly tenantId: string;
  readonly #options: KeyEventWatcherOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  #state: WatcherState = "connecting";
  #cursor: string | undefined;
  #coveredSince: number | undefined;
  #connects = 0;
  #events = 0;
  #lastError: string | undefined;
  #abort: AbortController | undefined;
  #sleep: { timer: NodeJS.Timeout; resolve: () => void } | undefined;
  #stopped = false;
  #loop: Promise<void>;

  constructor(options: KeyEventWatcherOptions) {
    this.#options = options;
    this.tenantId = options.tenantId;
    this.#now = options.now ?? (() => performance.now());
    this.#random = options.random ?? Math.random;
    this.#loop = this.#run();
  }

  isLive(): boolean {
    return this.#state === "live";
  }

  coveredSince(): number | undefined {
    return this.#state === "live" ? this.#coveredSince : undefined;
  }

  stats(): WatcherStats {
    return {
      tenantId: this.tenantId,
      state: this.#state,
      coveredSince: this.coveredSince(),
      connects: this.#connects,
      eventsReceived: this.#events,
      lastCursor: this.#cursor,
      lastError: this.#lastError,
    };
  }

  /** Ends the stream and stops reconnecting. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#state = "stopped";
    this.#abort?.abort();
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
    }
    await this.#loop;
  }

  async #run(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      const opened = await this.#follow();
      if (this.#stopped) break;
      failures = opened ? 0 : failures + 1;
      this.#state = "down";
      if (failures > 0) await this.#pause(this.#backoff(failures));
    }
  }

  /** One stream, until it ends or fails. True when it went live. */
  async #follow(): Promise<boolean> {
    const abort = new AbortController();
    this.#abort = abort;
    this.#state = "connecting";
    this.#connects++;
    let wentLive = false;
    const goLive = (): void => {
      if (wentLive || this.#stopped || abort.signal.aborted) return;
      wentLive = true;
      this.#state = "live";
      this.#coveredSince = this.#now();
    };
    const liveTimer = setTimeout(goLive, this.#options.assumeLiveAfterMs ?? 1_000);
    liveTimer.unref();
    try {
      const stream = this.#options.source.watchKeyEvents(
        { tenantId: this.tenantId, afterCursor: this.#cursor ?? "" },
        { signal: abort.signal, timeoutMs: 0 },
      );
      for await (const response of stream) {
        goLive();
        const event = response.event;
        if (event === undefined) continue;
        this.#events++;
        this.#options.onEvent(event);
        // Only after the event is applied: a crash in between replays it.
        if (event.cursor !== "") this.#cursor = event.cursor;
      }
      this.#lastError = undefined;
    } catch (error) {
      if (this.#stopped) return wentLive;
      const kmsError = KmsError.from(error);
      this.#lastError = `${kmsError.codeName} ${kmsError.reasonName}`;
      if (kmsError.reason === ErrorReason.EVENT_CURSOR_EXPIRED) {
        // Events after our cursor are gone: start over from now. Entries
        // fetched before the new stream goes live age out at the fallback age.
        this.#cursor = undefined;
        this.#coveredSince = undefined;
        return true;
      }
    } finally {
      clearTimeout(liveTimer);
      abort.abort();
      this.#state = this.#stopped ? "stopped" : "down";
    }
    return wentLive;
  }

  #backoff(failures: number): number {
    const initial = this.#options.initialBackoffMs ?? 100;
    const max = this.#options.maxBackoffMs ?? 5_000;
    return this.#random() * Math.min(max, initial * 2 ** Math.min(failures - 1, 20));
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#sleep = undefined;
        resolve();
      }, ms);
      timer.unref();
      this.#sleep = { timer, resolve };
    });
  }
}

/** What an event means for cached DEKs. */
export type Invalidation =
  | { readonly scope: "key"; readonly tenantId: string; readonly keyId: string }
  | { readonly scope: "version"; readonly tenantId: string; readonly keyId: string; readonly dekVersion: number }
  | { readonly scope: "primary"; readonly tenantId: string; readonly keyId: string };

/**
 * The one table from event type to what the cache drops:
 * - the key is revoked, destroyed, or its customer key is unusable: every
 *   entry of the key (both sides);
 * - one DEK version is revoked or purged: that version's entries;
 * - a new DEK version became primary: the cached primary (encryption side),
 *   so new messages use the new version at once;
 * - anything else (created, restored, KEK rotation): nothing.
 */
export function invalidationFor(event: KeyEventLike): Invalidation | undefined {
  const { tenantId, keyId } = event;
  switch (event.type) {
    case KeyEventType.KEY_REVOKED:
    case KeyEventType.KEY_DESTROYED:
    case KeyEventType.CUSTOMER_KEY_UNAVAILABLE:
      return { scope: "key", tenantId, keyId };
    case KeyEventType.DEK_VERSION_REVOKED:
    case KeyEventType.DEK_VERSION_PURGED:
      // A version-less event of this kind cannot be scoped: drop the whole key.
      return event.dekVersion > 0 ? { scope: "version", tenantId, keyId, dekVersion: event.dekVersion } : { scope: "key", tenantId, keyId };
    case KeyEventType.DEK_ROTATED:
      return { scope: "primary", tenantId, keyId };
    default:
      return undefined;
  }
}
