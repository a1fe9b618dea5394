import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DataDirLockedError, LOCK_FILE, lockDataDir } from "./data-dir-lock.js";

describe("PGlite data directory lock", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-lock-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a directory held by a live process", async () => {
    const holder = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"], { stdio: "ignore" });
    try {
      await writeFile(join(dir, LOCK_FILE), String(holder.pid));
      await expect(lockDataDir(dir)).rejects.toBeInstanceOf(DataDirLockedError);
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("takes over the lock of a process that died", async () => {
    const dead = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
    await new Promise((resolve) => dead.on("exit", resolve));
    await writeFile(join(dir, LOCK_FILE), String(dead.pid));
    const lock = await lockDataDir(dir);
    expect(await readFile(join(dir, LOCK_FILE), "utf8")).toBe(String(process.pid));
    await lock.release();
  });

  it("frees the directory on release", async () => {
    const first = await lockDataDir(dir);
    await first.release();
    const second = await lockDataDir(dir);
    await second.release();
  });
});
