/**
 * PGlite is one process's database: two servers opening the same data
 * directory would corrupt it. A pid file claims the directory; a pid file left
 * by a process that died (SIGKILL, power loss) is taken over, so a crash never
 * locks the service out of its own data.
 */
import { open, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const LOCK_FILE = "kms.pid";

export class DataDirLockedError extends Error {
  override readonly name = "DataDirLockedError";
}

export interface DataDirLock {
  release(): Promise<void>;
}

export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      const handle = await open(path, "wx", 0o600);
      try {
        await handle.writeFile(String(process.pid));
      } finally {
        await handle.close();
      }
      return { release: () => rm(path, { force: true }) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number((await readFile(path, "utf8").catch(() => "")).trim());
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new DataDirLockedError(`${dir} is in use by process ${holder}; run one server per PGlite data directory, or use PostgreSQL (DATABASE_URL) for several replicas`);
      }
      // The holder is gone: take the stale lock over.
      await writeFile(path, String(process.pid), { mode: 0o600 });
      return { release: () => rm(path, { force: true }) };
    }
  }
  throw new DataDirLockedError(`could not lock ${dir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
