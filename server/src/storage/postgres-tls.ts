import { readFile } from "node:fs/promises";
import type { ConnectionOptions } from "node:tls";

/** TLS settings for the PostgreSQL connection, given explicitly (they win over the URL). */
export interface PostgresTlsOptions {
  /** Trusted CA certificate(s), PEM. */
  ca?: string | Buffer | Array<string | Buffer> | undefined;
  /** Client certificate, PEM (for certificate authentication). */
  cert?: string | Buffer | undefined;
  /** Client private key, PEM. */
  key?: string | Buffer | undefined;
  /** Verify the server's certificate chain. Default: as sslmode says, else true. */
  rejectUnauthorized?: boolean | undefined;
  /** Server name for SNI and the hostname check, when it differs from the URL's host. */
  servername?: string | undefined;
}

export interface ResolvedPostgresConnection {
  /** The URL without its TLS parameters, which are carried by `ssl` instead. */
  readonly connectionString: string;
  readonly ssl: false | ConnectionOptions;
}

const TLS_PARAMETERS = ["sslmode", "sslrootcert", "sslcert", "sslkey", "ssl", "uselibpqcompat"];

/**
 * Turns a PostgreSQL URL and explicit TLS options into node-postgres settings,
 * with libpq's meaning of `sslmode`:
 *
 * - `disable`: no TLS;
 * - `require` (and node-postgres's `no-verify`): TLS without verifying the
 *   server — unless a root certificate is given, which libpq then verifies as
 *   for `verify-ca`;
 * - `verify-ca`: TLS, the chain must lead to a trusted CA, the host name is not checked;
 * - `verify-full`: TLS, chain and host name verified;
 * - `allow` and `prefer` are refused: they mean "fall back to plaintext", which
 *   node-postgres cannot do, and guessing either way is wrong for a KMS.
 *
 * `sslrootcert`, `sslcert` and `sslkey` in the URL name PEM files, read here
 * (`sslrootcert=system` means the system's CAs). With no `sslmode` the
 * explicit options alone decide: TLS with full verification if any are
 * given, plaintext if none are.
 *
 * The TLS parameters are removed from the URL so node-postgres does not apply
 * its own, different reading of them on top.
 */
export async function resolvePostgresConnection(
  databaseUrl: string,
  explicit: PostgresTlsOptions | undefined,
): Promise<ResolvedPostgresConnection> {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    // The URL may hold a password: do not echo it.
    throw new Error("the database URL is not a valid URL");
  }
  const params = url.searchParams;
  const mode = sslModeOf(params);
  const fromUrl: ConnectionOptions = {};
  const rootCert = params.get("sslrootcert");
  if (rootCert !== null && rootCert !== "system") fromUrl.ca = await readPem(rootCert, "sslrootcert");
  const clientCert = params.get("sslcert");
  if (clientCert !== null) fromUrl.cert = await readPem(clientCert, "sslcert");
  const clientKey = params.get("sslkey");
  if (clientKey !== null) fromUrl.key = await readPem(clientKey, "sslkey");
  for (const name of TLS_PARAMETERS) params.delete(name);
  const connectionString = url.toString();

  const given = withoutUndefined(explicit ?? {});
  const anyGiven = Object.keys(given).length > 0 || Object.keys(fromUrl).length > 0;
  const tls: ConnectionOptions = { ...fromUrl, ...given };
  const hasCa = tls.ca !== undefined;

  switch (mode) {
    case undefined:
      return { connectionString, ssl: anyGiven ? { rejectUnauthorized: true, ...tls } : false };
    case "disable":
      if (anyGiven) throw new Error("sslmode=disable contradicts the TLS options given");
      return { connectionString, ssl: false };
    case "require":
    case "no-verify":
      return {
        connectionString,
        ssl: hasCa && mode === "require" ? verifyChainOnly({ rejectUnauthorized: true, ...tls }) : { rejectUnauthorized: false, ...tls },
      };
    case "verify-ca":
      return { connectionString, ssl: verifyChainOnly({ rejectUnauthorized: true, ...tls }) };
    case "verify-full":
      return { connectionString, ssl: { rejectUnauthorized: true, ...tls } };
  }
}

type SslMode = "disable" | "require" | "no-verify" | "verify-ca" | "verify-full";

function sslModeOf(params: URLSearchParams): SslMode | undefined {
  const sslmode = params.get("sslmode");
  if (sslmode !== null) {
    switch (sslmode) {
      case "disable":
      case "require":
      case "no-verify":
      case "verify-ca":
      case "verify-full":
        return sslmode;
      case "allow":
      case "prefer":
        throw new Error(
          `sslmode=${sslmode} (plaintext fallback) is not supported: use disable, require, verify-ca or verify-full`,
        );
      default:
        throw new Error(`unknown sslmode "${sslmode}"`);
    }
  }
  // node-postgres's own spelling.
  const ssl = params.get("ssl");
  if (ssl === "true" || ssl === "1") return "verify-full";
  if (ssl === "false" || ssl === "0") return "disable";
  if (ssl === "no-verify") return "no-verify";
  return undefined;
}

/** libpq's verify-ca: the chain must verify, the host name need not match. */
function verifyChainOnly(options: ConnectionOptions): ConnectionOptions {
  return { ...options, checkServerIdentity: () => undefined };
}

async function readPem(path: string, parameter: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw new Error(`cannot read the file named by ${parameter} in the database URL`, { cause: error });
  }
}

function withoutUndefined(options: PostgresTlsOptions): ConnectionOptions {
  const result: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(options)) if (value !== undefined) result[name] = value;
  return result as ConnectionOptions;
}
