/** The server process: configuration, wiring, signals. Nothing else. */
import { createJsonLinesLogger } from "./api/logger.js";
import { ConfigError, loadConfig } from "./config.js";
import { startKms } from "./start-kms.js";
import { printDevelopmentBanner } from "./dev/development-banner.js";

const logger = createJsonLinesLogger();
try {
  const config = loadConfig();
  const kms = await startKms(config, { logger });
  logger.info("matih-kms listening", { url: kms.server.url, mode: config.mode, database: kms.database.engine });
  if (kms.devTlsDir !== undefined) printDevelopmentBanner(kms.server.url, kms.devTlsDir, config.dataDir);

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info("draining", { signal });
    kms.stop().then(
      () => {
        logger.info("stopped", {});
        process.exit(0);
      },
      (error: unknown) => {
        logger.error("shutdown failed", { err: error });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
} catch (error) {
  if (error instanceof ConfigError) {
    process.stderr.write(`matih-kms: configuration error: ${error.message}\n`);
    process.exit(2);
  }
  logger.error("start-up failed", { err: error });
  process.exit(1);
}
