// Regenerates gen/ from proto/: the one way generated code is produced.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { prepareBufDeps } from "./buf-deps.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
prepareBufDeps();
const buf = join(root, "node_modules", ".bin", "buf");
execFileSync(buf, ["format", "-w", "proto"], { cwd: root, stdio: "inherit" });
execFileSync(buf, ["generate"], { cwd: root, stdio: "inherit" });
