// Copies the two google.api files our protos import out of the installed
// google-proto-files package into .buf-deps/ (git-ignored), because the Buf
// Schema Registry is unreachable here and third-party files are not committed.
import { copyFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const source = join(dirname(require.resolve("google-proto-files/package.json")), "google", "api");
const target = join(root, ".buf-deps", "google", "api");

export function prepareBufDeps() {
  mkdirSync(target, { recursive: true });
  for (const file of ["annotations.proto", "http.proto"]) {
    copyFileSync(join(source, file), join(target, file));
  }
  return join(root, ".buf-deps");
}

if (process.argv[1] === fileURLToPath(import.meta.url)) prepareBufDeps();
