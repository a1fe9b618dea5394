/**
 * npm run smoke:cloud
 *
 * Runs the provider contract against the real AWS KMS, Azure Key Vault,
 * Google Cloud KMS (and a real PKCS#11 HSM) for whichever of them the
 * environment configures; says, for each, what is set and what is missing.
 * Exits 1 when nothing at all is configured, else with the suite's status.
 * See docs/providers.md ("Real-cloud smoke test").
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { cloudSmokeConfigs } from "./cloud-targets.js";

const configs = cloudSmokeConfigs(process.env);
console.log("Real-cloud smoke test of the key providers\n");
for (const config of configs) {
  const state = config.missing.length === 0 ? "WILL RUN" : "skipped";
  console.log(`${config.cloud.padEnd(15)} ${state}${config.missing.length === 0 ? "" : ` — missing: ${config.missing.join(", ")}`}`);
  for (const option of config.optional) {
    console.log(`${"".padEnd(15)}   ${option.set ? "set    " : "not set"} ${option.name} (stages ${option.enables})`);
  }
}
const runnable = configs.filter((c) => c.missing.length === 0);
if (runnable.length === 0) {
  console.log("\nNothing to run: no cloud is configured. Set the variables listed above for at least one cloud (docs/providers.md).");
  process.exit(1);
}
console.log(`\nRunning the contract against: ${runnable.map((c) => c.cloud).join(", ")}\n`);
const root = fileURLToPath(new URL("../../../", import.meta.url));
const result = spawnSync(process.execPath, [`${root}node_modules/vitest/vitest.mjs`, "run", "--config", "test/providers/cloud/vitest.smoke.config.ts"], {
  cwd: root,
  stdio: "inherit",
  env: process.env,
});
process.exit(result.status ?? 1);
