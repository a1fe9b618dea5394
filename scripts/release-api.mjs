// Records the current API as the released baseline that `buf breaking` guards.
// Run only when a version of the API is released.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { prepareBufDeps } from "./buf-deps.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
prepareBufDeps();
execFileSync(join(root, "node_modules", ".bin", "buf"), ["build", "-o", "proto/released/matih-kms-v1.binpb"], { cwd: root, stdio: "inherit" });
