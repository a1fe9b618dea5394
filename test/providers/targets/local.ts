/** The embedded `local` provider (a master key file) as a contract target: two data directories, two keys. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalRootProvider } from "../../../server/src/providers/local/local-root-provider.js";
import type { ContractTarget } from "../contract/key-wrapping-contract.js";

const NOT_APPLICABLE = "the local master key is a file read once at start-up: there is no service to lose, permission to withdraw or key to disable";

export function localTarget(): ContractTarget {
  return {
    name: "local",
    skip: undefined,
    scenarios: { unavailable: NOT_APPLICABLE, "permission-denied": NOT_APPLICABLE, "key-disabled": NOT_APPLICABLE },
    async open() {
      const dirA = await mkdtemp(join(tmpdir(), "matih-local-a-"));
      const dirB = await mkdtemp(join(tmpdir(), "matih-local-b-"));
      const root = await openLocalRootProvider(dirA);
      const otherRoot = await openLocalRootProvider(dirB);
      return {
        root,
        otherRoot,
        wrapping: undefined,
        stage: () => Promise.reject(new Error(NOT_APPLICABLE)),
        async close() {
          await root.close();
          await otherRoot.close();
          await rm(dirA, { recursive: true, force: true });
          await rm(dirB, { recursive: true, force: true });
        },
      };
    },
  };
}
