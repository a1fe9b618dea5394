import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    globalSetup: ["test/support/test-schemas.global-setup.ts"],
    include: ["server/**/*.test.ts", "test/**/*.test.ts", "clients/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // PGlite instances take ~0.5-0.85 GB each; two workers keep memory sane on 2 cores.
    pool: "forks",
    maxWorkers: 2,
  },
});
