/**
 * A first-in, first-out asynchronous lock.
 *
 * `acquire()` resolves, in call order, with a release function once every
 * earlier holder has released. Release hands the lock straight to the next
 * waiter (no barging), and releasing twice is harmless: the second call does
 * nothing, so a stale release can never free someone else's turn.
 */
export interface AsyncMutex {
  /** Waits for the lock; resolves with the function that releases it. */
  acquire(): Promise<() => void>;
  /** Runs `fn` holding the lock and releases it however `fn` ends. */
  runExclusive<T>(fn: () => T | Promise<T>): Promise<T>;
  /** Whether someone holds the lock. */
  readonly isLocked: boolean;
  /** How many callers wait behind the holder. */
  readonly waiting: number;
}

export function createAsyncMutex(): AsyncMutex {
  let locked = false;
  const waiters: Array<() => void> = [];

  function grant(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = waiters.shift();
      if (next === undefined) locked = false;
      else next();
    };
  }

  function acquire(): Promise<() => void> {
    if (!locked) {
      locked = true;
      return Promise.resolve(grant());
    }
    return new Promise((resolve) => {
      waiters.push(() => resolve(grant()));
    });
  }

  return {
    acquire,
    async runExclusive<T>(fn: () => T | Promise<T>): Promise<T> {
      const release = await acquire();
      try {
        return await fn();
      } finally {
        release();
      }
    },
    get isLocked() {
      return locked;
    },
    get waiting() {
      return waiters.length;
    },
  };
}
