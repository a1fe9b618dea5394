/**
 * The key-event feed of one server process: ONE poller reads every new event
 * from `key_events` (all tenants, in id order) and hands each to the
 * subscriptions it concerns, instead of one query per subscriber per tick.
 * Events are written through the database by every replica, so every
 * replica's subscribers see every replica's events.
 *
 * A subscription is either
 * - live: the poller pushes matching events into its queue; or
 * - catching up: it reads its own history (`after position, up to the
 *   poller's watermark`, tenant-filtered, a page at a time) until it reaches
 *   the watermark, then turns live. This happens at the start (a cursor in the
 *   past), and when a slow consumer lets its queue grow past `maxQueuedEvents`
 *   (it is dropped from the live fan-out and reads pages at its own pace), so
 *   memory stays bounded whatever a client does.
 *
 * Exactly once, in order: `position` is the id of the last event handed to the
 * subscription's queue (or skipped as another tenant's); the poller hands over
 * only ids above it, and a catch-up page starts above it. Ids are dense and
 * in commit order (see key-event.repository.ts), so "every id up to the
 * watermark" is a complete, final set once read.
 *
 * The poller runs only while there are subscriptions (on PGlite a poll takes
 * the session mutex, briefly). When the feed is closed (server shutdown)
 * every subscription ends cleanly and new ones are refused SHUTTING_DOWN.
 */
import type { KeyEvent } from "../domain/key-event.js";
import { KmsError } from "../domain/kms-error.js";
import type { Executor } from "../storage/database.js";
import { isKeyEventHistoryCompleteAfter, latestKeyEventId, listKeyEventsAfter } from "../storage/key-event.repository.js";

export const DEFAULT_EVENT_POLL_INTERVAL_MS = 150;
const DEFAULT_BATCH_SIZE = 500;
const DEFAULT_MAX_QUEUED_EVENTS = 1_000;

export interface KeyEventFeedOptions {
  /** Pause between polls when the last one found no backlog. Default 150 ms. */
  readonly pollIntervalMs?: number | undefined;
  /** Events per query, for the poller and for catch-up pages. Default 500. */
  readonly batchSize?: number | undefined;
  /** A live subscription whose consumer leaves more queued than this falls back to catching up. Default 1,000. */
  readonly maxQueuedEvents?: number | undefined;
  /** A failed poll (the database unreachable, say); the poller retries at the next interval. */
  readonly onPollError?: ((error: unknown) => void) | undefined;
}

export interface KeyEventSubscription {
  /**
   * The next events (at least one), waiting for them. `undefined` when the
   * subscription ends: closed, the feed closed (shutdown), or `signal`
   * aborted. Throws EVENT_CURSOR_EXPIRED when the history the subscription
   * still had to read was pruned under it. One caller at a time.
   */
  next(signal: AbortSignal): Promise<readonly KeyEvent[] | undefined>;
  close(): void;
}

export interface KeyEventFeed {
  /**
   * Delivers every event with an id above `afterEventId` (of `tenantId`, or of
   * every tenant when undefined), in order, each once. The caller has checked
   * that the history after `afterEventId` is complete.
   */
  subscribe(options: { readonly tenantId: string | undefined; readonly afterEventId: number }): KeyEventSubscription;
  /** Open subscriptions (for tests and metrics). */
  readonly subscriberCount: number;
  /** Ends every subscription; later `subscribe` calls throw SHUTTING_DOWN. Idempotent. */
  close(): void;
}

interface Subscriber {
  readonly tenantId: string | undefined;
  position: number;
  live: boolean;
  closed: boolean;
  readonly queue: KeyEvent[];
  wake: (() => void) | undefined;
}

export function createKeyEventFeed(db: Executor, options: KeyEventFeedOptions = {}): KeyEventFeed {
  const pollIntervalMs = options.pollIntervalMs ?? DEFAULT_EVENT_POLL_INTERVAL_MS;
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  const maxQueued = options.maxQueuedEvents ?? DEFAULT_MAX_QUEUED_EVENTS;
  const subscribers = new Set<Subscriber>();
  /** Every event up to here has been read by the poller; undefined while it is idle. */
  let watermark: number | undefined;
  let starting: Promise<void> | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  const wake = (subscriber: Subscriber): void => subscriber.wake?.();

  function schedule(delayMs: number): void {
    if (closed || timer !== undefined) return;
    timer = setTimeout(() => void poll(), delayMs);
    timer.unref(); // never what keeps a process alive
  }

  /** Starts the poller at the newest event (nobody live needs anything older). */
  function ensurePolling(): Promise<void> {
    if (watermark !== undefined || closed) return Promise.resolve();
    starting ??= latestKeyEventId(db)
      .then((latest) => {
        if (closed || watermark !== undefined) return;
        watermark = latest;
        schedule(pollIntervalMs);
      })
      .finally(() => {
        starting = undefined;
      });
    return starting;
  }

  async function poll(): Promise<void> {
    timer = undefined;
    if (closed) return;
    if (subscribers.size === 0 || watermark === undefined) {
      watermark = undefined; // idle until the next subscriber
      return;
    }
    const from = watermark;
    let backlog = false;
    try {
      const events = await listKeyEventsAfter(db, { afterEventId: from, limit: batchSize });
      backlog = events.length === batchSize;
      if (!closed && events.length > 0) fanOut(from, events);
    } catch (error) {
      options.onPollError?.(error);
    }
    schedule(backlog ? 0 : pollIntervalMs);
  }

  function fanOut(from: number, events: readonly KeyEvent[]): void {
    const last = events[events.length - 1]!.eventId;
    // Ids are dense: a hole means events were pruned before the poller read
    // them. Live subscribers fall back to their own reads, which report it.
    const hole = events[0]!.eventId !== from + 1;
    for (const subscriber of subscribers) {
      if (!subscriber.live) continue;
      if (hole) {
        subscriber.live = false;
      } else {
        for (const event of events) {
          if (event.eventId > subscriber.position && (subscriber.tenantId === undefined || event.tenantId === subscriber.tenantId)) {
            subscriber.queue.push(event);
          }
        }
        subscriber.position = Math.max(subscriber.position, last);
        if (subscriber.queue.length > maxQueued) subscriber.live = false;
      }
      wake(subscriber);
    }
    watermark = last;
  }

  /** One catch-up page: events after the subscriber's position, up to the poller's watermark. */
  async function catchUp(subscriber: Subscriber, upTo: number): Promise<void> {
    const after = subscriber.position;
    const events = await listKeyEventsAfter(db, { afterEventId: after, upToEventId: upTo, tenantId: subscriber.tenantId, limit: batchSize });
    // Pruning removes the oldest events first, so if the history after
    // `after` is complete now, it was complete when the page was read.
    if (!(await isKeyEventHistoryCompleteAfter(db, after))) {
      throw new KmsError(
        "EVENT_CURSOR_EXPIRED",
        "events this stream had not yet delivered were pruned (older than the retention period); resynchronise and watch from now",
      );
    }
    if (subscriber.closed) return;
    subscriber.queue.push(...events);
    subscriber.position = events.length === batchSize ? events[events.length - 1]!.eventId : upTo;
  }

  function waitForWake(subscriber: Subscriber, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        subscriber.wake = undefined;
        signal.removeEventListener("abort", done);
        resolve();
      };
      subscriber.wake = done;
      signal.addEventListener("abort", done, { once: true });
    });
  }

  return {
    subscribe({ tenantId, afterEventId }) {
      if (closed) throw new KmsError("SHUTTING_DOWN", "the server is shutting down; watch again on another instance");
      const subscriber: Subscriber = { tenantId, position: afterEventId, live: false, closed: false, queue: [], wake: undefined };
      subscribers.add(subscriber);
      const close = (): void => {
        subscriber.closed = true;
        subscribers.delete(subscriber);
        wake(subscriber);
      };
      return {
        async next(signal) {
          for (;;) {
            if (subscriber.queue.length > 0) return subscriber.queue.splice(0);
            if (subscriber.closed || closed || signal.aborted) return undefined;
            if (subscriber.live) {
              await waitForWake(subscriber, signal);
              continue;
            }
            await ensurePolling();
            const upTo = watermark;
            if (upTo === undefined) continue; // closed meanwhile: the checks above end it
            if (subscriber.position >= upTo) subscriber.live = true;
            else await catchUp(subscriber, upTo);
          }
        },
        close,
      };
    },
    get subscriberCount() {
      return subscribers.size;
    },
    close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      for (const subscriber of subscribers) wake(subscriber);
    },
  };
}
