/**
 * vitest global set-up for the PostgreSQL test schemas.
 *
 * Test schemas are dropped once, when the whole run ends, never while tests
 * run: kysely's Migrator introspects every schema in the database by name
 * (`has_schema_privilege(nspname, ...)`), so a schema another test drops at
 * that moment fails an unrelated test's migration with "schema ... does not
 * exist".
 *
 * Before the run: drops schemas a crashed earlier run left behind (older than
 * STALE_AFTER_SECONDS, so a parallel run's schemas are untouched) and tags this
 * run's schemas through KMS_TEST_RUN_ID, which the test workers inherit.
 * After the run: drops every schema carrying this run's tag.
 */
import { dropSchemasOfRun, dropStaleSchemas, newRunId, RUN_ID_VARIABLE } from "./test-schemas.js";

export default async function setup(): Promise<() => Promise<void>> {
  const runId = newRunId();
  process.env[RUN_ID_VARIABLE] = runId;
  await dropStaleSchemas();
  return async () => {
    await dropSchemasOfRun(runId);
  };
}
