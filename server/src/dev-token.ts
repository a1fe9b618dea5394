/** `npm run --silent dev-token -- <tenantId>`: a bearer token the running development server accepts. */
import { isValidId } from "./domain/identifiers.js";
import { loadConfig } from "./config.js";
import { signDevToken } from "./dev/dev-token-issuer.js";

const tenantId = process.argv[2];
if (tenantId === undefined || !isValidId(tenantId)) {
  process.stderr.write("usage: npm run --silent dev-token -- <tenantId>   (1-64 letters, digits, '-' or '_')\n");
  process.exit(2);
}
const config = loadConfig();
if (config.mode !== "development") {
  process.stderr.write("dev-token works only in development mode\n");
  process.exit(2);
}
try {
  process.stdout.write(`${await signDevToken(config.dataDir, tenantId, config.jwt.tenantClaim)}\n`);
} catch (error) {
  if ((error as NodeJS.ErrnoException).code === "ENOENT") {
    process.stderr.write(`no development signing key in ${config.dataDir}: run npm start once first\n`);
    process.exit(1);
  }
  throw error;
}
