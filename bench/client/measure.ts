/** Timing helpers for the client benchmark. */

export interface Throughput {
  readonly opsPerSecond: number;
  readonly operations: number;
  readonly seconds: number;
  /** Mean time per operation, microseconds. */
  readonly meanMicros: number;
}

/** Runs `op` back to back: `warmupSeconds` unmeasured, then `seconds` measured. */
export async function throughput(op: () => Promise<unknown>, seconds: number, warmupSeconds: number): Promise<Throughput> {
  const run = async (limitSeconds: number): Promise<{ operations: number; elapsed: number }> => {
    const start = performance.now();
    const until = start + limitSeconds * 1000;
    let operations = 0;
    while (performance.now() < until) {
      for (let i = 0; i < 100; i++) await op();
      operations += 100;
    }
    return { operations, elapsed: (performance.now() - start) / 1000 };
  };
  await run(warmupSeconds);
  const { operations, elapsed } = await run(seconds);
  return { opsPerSecond: operations / elapsed, operations, seconds: elapsed, meanMicros: (elapsed * 1e6) / operations };
}

export function thousands(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

export function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}
