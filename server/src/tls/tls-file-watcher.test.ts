import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { watchTlsFiles, type TlsMaterial, type TlsFileWatcher } from "./tls-file-watcher.js";

describe("TLS file watcher", () => {
  let dir: string;
  let watcher: TlsFileWatcher | undefined;
  const files = () => ({ certFile: join(dir, "tls.crt"), keyFile: join(dir, "tls.key"), clientCaFile: join(dir, "ca.crt") });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kms-tlswatch-"));
    for (const [file, text] of Object.entries({ "tls.crt": "cert-1", "tls.key": "key-1", "ca.crt": "ca-1" })) await writeFile(join(dir, file), text);
  });
  afterEach(async () => {
    watcher?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("applies renewed files and nothing before they change", async () => {
    const applied: TlsMaterial[] = [];
    watcher = watchTlsFiles(files(), (m) => applied.push(m), { intervalMs: 3_600_000, onError: (e) => { throw e; } });
    await watcher.check();
    expect(applied).toHaveLength(0);
    await writeFile(join(dir, "tls.crt"), "cert-2-longer");
    await writeFile(join(dir, "tls.key"), "key-2-longer");
    await watcher.check();
    expect(applied.map((m) => [m.cert.toString(), m.key.toString(), m.ca.toString()])).toEqual([["cert-2-longer", "key-2-longer", "ca-1"]]);
    await watcher.check();
    expect(applied).toHaveLength(1);
  });

  it("keeps the current material when the new files are unusable, and retries on the next check", async () => {
    const errors: unknown[] = [];
    let accept = false;
    const applied: string[] = [];
    watcher = watchTlsFiles(
      files(),
      (m) => {
        if (!accept) throw new Error("key does not match certificate");
        applied.push(m.cert.toString());
      },
      { intervalMs: 3_600_000, onError: (e) => errors.push(e) },
    );
    await watcher.check();
    await writeFile(join(dir, "tls.crt"), "cert-half-written");
    await watcher.check();
    expect(errors).toHaveLength(1);
    expect(applied).toEqual([]);
    accept = true;
    await watcher.check();
    expect(applied).toEqual(["cert-half-written"]);
  });
});
