/**
 * The Node flags the server ships with: those `npm start` passes (package.json's
 * "start" script, `tsx <flags> server/src/main.ts`). The one place they are
 * written is that script; benchmarks and the process tests read them here, so
 * what they measure and test is the server as it runs.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "./processes.js";

export function shippedNodeFlags(): string[] {
  const manifest = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { scripts?: Record<string, string> };
  const start = manifest.scripts?.["start"];
  const words = start?.split(/\s+/) ?? [];
  if (words[0] !== "tsx" || words.at(-1) !== "server/src/main.ts") {
    throw new Error(`package.json's start script is not "tsx [node flags] server/src/main.ts": ${start}`);
  }
  return words.slice(1, -1);
}
