/**
 * The real matih-kms for `npm run bench:client`, in a child process of its
 * own so the server's work does not share the benchmark's event loop:
 * `startKms` in development mode (PGlite, local master key and dev PKI in a
 * temporary data directory) on an ephemeral port. Prints one JSON line
 * `{"url", "tlsDir"}` when it listens; stops and removes its directory on
 * SIGTERM.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../server/src/api/logger.js";
import { loadConfig } from "../../server/src/config.js";
import { startKms } from "../../server/src/start-kms.js";

const dataDir = await mkdtemp(join(tmpdir(), "kms-bench-client-"));
const kms = await startKms(loadConfig({ KMS_DATA_DIR: dataDir, KMS_PORT: "0" }), { logger: silentLogger });
process.stdout.write(`${JSON.stringify({ url: kms.server.url, tlsDir: kms.devTlsDir })}\n`);

let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await kms.stop(1_000);
  await rm(dataDir, { recursive: true, force: true });
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
process.on("disconnect", () => void stop());
