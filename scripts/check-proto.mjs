// The API guard CI runs: buf lint, buf format drift, breaking changes against
// the released v1 API (wire and JSON level), and generated code drift.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { prepareBufDeps } from "./buf-deps.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const buf = join(root, "node_modules", ".bin", "buf");
const released = join(root, "proto", "released", "matih-kms-v1.binpb");
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: "inherit" });

prepareBufDeps();
run(buf, ["lint"]);
run(buf, ["format", "--diff", "--exit-code", "proto"]);
if (!existsSync(released)) throw new Error(`missing the released API image ${released}`);
run(buf, ["breaking", "proto", "--against", released]);
run(buf, ["generate"]);
const drift = execFileSync("git", ["status", "--porcelain", "--", "gen"], { cwd: root, encoding: "utf8" });
if (drift.trim() !== "") {
  console.error(`regenerating gen/ changed it; run npm run generate and commit:\n${drift}`);
  process.exit(1);
}
console.log("proto: lint, format, breaking (WIRE_JSON) and generated code are clean");
