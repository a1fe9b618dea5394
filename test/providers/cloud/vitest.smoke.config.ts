import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

/** Only the real-cloud smoke suite (npm run smoke:cloud); `npm test` never matches *.smoke.ts. */
export default defineConfig({
  root: fileURLToPath(new URL("../../../", import.meta.url)),
  test: {
    include: ["test/providers/cloud/*.smoke.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    maxWorkers: 1,
  },
});
