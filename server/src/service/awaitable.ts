/**
 * A result that is there at once when no I/O was needed, or a promise of it.
 * The hot path answers a call that memory serves without a promise or an
 * await: each async layer costs allocations the garbage collector pays for on
 * every call (docs/decisions/0003-hot-path-performance.md).
 */
export type Awaitable<T> = T | Promise<T>;

/** `next` applied to `value`: at once when it is there, else once the promise fulfils. */
export function thenApply<T, R>(value: Awaitable<T>, next: (value: T) => Awaitable<R>): Awaitable<R> {
  return value instanceof Promise ? value.then(next) : next(value);
}

/** For callers that want a promise whatever happens: a value is wrapped, a synchronous throw becomes a rejection. */
export function asPromise<T>(run: () => Awaitable<T>): Promise<T> {
  try {
    return Promise.resolve(run());
  } catch (error) {
    return Promise.reject(error);
  }
}
