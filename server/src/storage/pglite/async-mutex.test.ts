import { describe, expect, it } from "vitest";
import { createAsyncMutex } from "./async-mutex.js";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("AsyncMutex", () => {
  it("grants the lock to waiters in the order they asked", async () => {
    const mutex = createAsyncMutex();
    const release = await mutex.acquire();
    const order: number[] = [];
    const waiters = [1, 2, 3, 4].map((n) =>
      mutex.acquire().then((releaseN) => {
        order.push(n);
        releaseN();
      }),
    );
    await tick();
    expect(order).toEqual([]);
    expect(mutex.waiting).toBe(4);
    release();
    await Promise.all(waiters);
    expect(order).toEqual([1, 2, 3, 4]);
    expect(mutex.isLocked).toBe(false);
  });

  it("hands the lock to the next waiter before a newcomer can take it", async () => {
    const mutex = createAsyncMutex();
    const release = await mutex.acquire();
    const order: string[] = [];
    const queued = mutex.runExclusive(() => order.push("queued"));
    release();
    // Asked after the release, but the queued waiter already owns the lock.
    const newcomer = mutex.runExclusive(() => order.push("newcomer"));
    await Promise.all([queued, newcomer]);
    expect(order).toEqual(["queued", "newcomer"]);
  });

  it("runs at most one holder at a time", async () => {
    const mutex = createAsyncMutex();
    let inside = 0;
    let most = 0;
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        mutex.runExclusive(async () => {
          inside++;
          most = Math.max(most, inside);
          await new Promise((resolve) => setTimeout(resolve, i % 3));
          inside--;
        }),
      ),
    );
    expect(most).toBe(1);
  });

  it("releases the lock when the holder throws", async () => {
    const mutex = createAsyncMutex();
    await expect(
      mutex.runExclusive(async () => {
        await tick();
        throw new Error("boom");
      }),
    ).rejects.toThrow("boom");
    expect(mutex.isLocked).toBe(false);
    await expect(mutex.runExclusive(() => "next")).resolves.toBe("next");
  });

  it("ignores a second release, so a stale holder cannot free the next holder's turn", async () => {
    const mutex = createAsyncMutex();
    const first = await mutex.acquire();
    const second = mutex.acquire();
    first();
    const releaseSecond = await second;
    first();
    expect(mutex.isLocked).toBe(true);
    let thirdHeld = false;
    const third = mutex.acquire().then((release) => {
      thirdHeld = true;
      release();
    });
    await tick();
    expect(thirdHeld).toBe(false);
    releaseSecond();
    await third;
    expect(thirdHeld).toBe(true);
  });
});
