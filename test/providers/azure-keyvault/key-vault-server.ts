/**
 * A local Azure Key Vault (and the Entra ID token endpoint it trusts) that
 * speaks the REST API the real @azure/keyvault-keys uses, over HTTPS:
 *
 *   GET  /keys/{name}[/{version}]?api-version=...
 *   POST /keys/{name}/{version}/wrapkey?api-version=...    {alg, value}
 *   POST /keys/{name}/{version}/unwrapkey?api-version=...  {alg, value}
 *   POST /{tenant}/oauth2/v2.0/token                       client credentials
 *
 * A request without a bearer token gets the vault's challenge — 401 with
 * `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
 * resource="https://vault.localtest"` — as Key Vault does; the SDK's
 * challenge policy then asks the credential for a token for that resource
 * and tenant and sends the request again.
 *
 * Host names: the vault is https://<vault>.vault.localtest:<port> and the
 * authority https://login.localtest:<port>; `agent` resolves every name to
 * 127.0.0.1 and trusts the server's own CA, so the SDK's check that the
 * challenge's resource matches the vault's domain runs unchanged.
 *
 * It can simulate: a key disabled or deleted, a client's access withdrawn, a
 * client's secret revoked, the service stopped, and (through the blob)
 * tampered ciphertext and the wrong key. Like Key Vault it lets a wrapKey
 * through on a disabled RSA key (a public-key operation) and refuses
 * unwrapKey (403, inner error KeyDisabled).
 */
import { constants, createCipheriv, createDecipheriv, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes, randomUUID, type KeyObject } from "node:crypto";
import { Agent, createServer } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createCertificateAuthority, issueServerCertificate } from "../../../server/src/tls/dev-pki.js";
import { listenRestartable, readBody } from "../restartable-http-server.js";

export type KeyVaultKeyType = "RSA" | "oct-HSM";

interface VaultKeyVersion {
  readonly version: string;
  readonly kty: KeyVaultKeyType;
  readonly rsa?: { readonly privateKey: KeyObject; readonly jwk: { n: string; e: string } };
  readonly aes?: Buffer;
}

interface VaultKey {
  readonly name: string;
  readonly versions: VaultKeyVersion[];
  enabled: boolean;
  deleted: boolean;
  /** Client ids whose access policy no longer grants this key. */
  readonly denied: Set<string>;
}

interface Client {
  readonly clientId: string;
  readonly tenantId: string;
  /** A client secret, or (workload identity) the federated assertion it accepts. */
  secret: string | undefined;
  assertion: string | undefined;
}

export interface KeyVaultServerOptions {
  /** The first label of the vault's host name. Default "matih". */
  readonly vaultName?: string;
  readonly tenantId?: string;
}

export interface KeyVaultServer {
  /** https://<vault>.vault.localtest:<port> */
  readonly vaultUrl: string;
  /** https://login.localtest:<port> */
  readonly authorityHost: string;
  readonly tenantId: string;
  /** An HTTPS agent resolving *.localtest to 127.0.0.1 and trusting the server's CA. */
  readonly agent: Agent;
  readonly caPem: string;
  /** Registers an app (service principal) and returns its client id and secret. */
  addClient(tenantId?: string): { clientId: string; clientSecret: string };
  /** Registers an app that authenticates with a federated assertion (workload identity) instead of a secret. */
  addFederatedClient(assertion: string, tenantId?: string): { clientId: string };
  revokeClientSecret(clientId: string): void;
  /** Creates a key (RSA 2048 or a 256-bit oct-HSM key) and returns its unversioned id. */
  createKey(name: string, kty?: KeyVaultKeyType): string;
  /** Adds a new current version; returns the versioned id. */
  rotateKey(name: string): string;
  setKeyEnabled(name: string, enabled: boolean): void;
  setKeyDeleted(name: string, deleted: boolean): void;
  setAccess(name: string, clientId: string, allowed: boolean): void;
  /** Requests by kind ("token", "challenge", "get", "wrapkey", "unwrapkey", ...). */
  requestCounts(): Readonly<Record<string, number>>;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

class VaultFault extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly inner?: string,
  ) {
    super(message);
  }
}

const RESOURCE = "https://vault.localtest";
const SCOPE = `${RESOURCE}/.default`;
const TOKEN_LIFETIME_S = 3600;

export async function startKeyVaultServer(options: KeyVaultServerOptions = {}): Promise<KeyVaultServer> {
  const vaultName = options.vaultName ?? "matih";
  const defaultTenant = options.tenantId ?? "0b5c7c1e-5d7a-4d3f-9a55-6d6174696801";
  const ca = await createCertificateAuthority({ commonName: "local Key Vault CA" });
  const tls = await issueServerCertificate(ca, { dnsNames: ["*.vault.localtest", "login.localtest"], ipAddresses: ["127.0.0.1"] });
  const clients = new Map<string, Client>();
  const tokens = new Map<string, { clientId: string; tenantId: string; expires: number }>();
  const keys = new Map<string, VaultKey>();
  const counts: Record<string, number> = {};
  const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1);
  let port = 0;

  const vaultHost = () => `${vaultName}.vault.localtest:${port}`;
  const vaultUrl = () => `https://${vaultHost()}`;
  const authority = () => `https://login.localtest:${port}`;

  function newVersion(kty: KeyVaultKeyType): VaultKeyVersion {
    const version = randomBytes(16).toString("hex");
    if (kty === "oct-HSM") return { version, kty, aes: randomBytes(32) };
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const jwk = publicKey.export({ format: "jwk" }) as { n: string; e: string };
    return { version, kty, rsa: { privateKey, jwk: { n: jwk.n, e: jwk.e } } };
  }

  function bundle(key: VaultKey, v: VaultKeyVersion): Record<string, unknown> {
    const kid = `${vaultUrl()}/keys/${key.name}/${v.version}`;
    const jwk: Record<string, unknown> =
      v.kty === "RSA" ? { kid, kty: "RSA", key_ops: ["wrapKey", "unwrapKey", "encrypt", "decrypt"], n: v.rsa?.jwk.n, e: v.rsa?.jwk.e } : { kid, kty: "oct-HSM", key_ops: ["wrapKey", "unwrapKey"] };
    return {
      key: jwk,
      attributes: { enabled: key.enabled, created: 1_700_000_000, updated: 1_700_000_000, recoveryLevel: "Recoverable+Purgeable", recoverableDays: 90 },
    };
  }

  function authenticate(request: IncomingMessage): { clientId: string } | undefined {
    const header = request.headers["authorization"];
    if (typeof header !== "string" || !header.startsWith("Bearer ")) return undefined;
    const token = tokens.get(header.slice("Bearer ".length));
    if (token === undefined || token.expires < Date.now()) return undefined;
    return { clientId: token.clientId };
  }

  function challenge(response: ServerResponse, error?: string): void {
    count("challenge");
    const value = `Bearer authorization="${authority()}/${defaultTenant}", resource="${RESOURCE}"${error === undefined ? "" : `, error="${error}"`}`;
    sendJson(response, 401, { error: { code: "Unauthorized", message: "AKV10000: Request is missing a Bearer or PoP token." } }, { "www-authenticate": value });
  }

  function findKey(name: string, version: string | undefined): { key: VaultKey; v: VaultKeyVersion } {
    const key = keys.get(name);
    const notFound = new VaultFault(404, "KeyNotFound", `A key with (name/id) ${name}${version ? `/${version}` : ""} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.`);
    if (key === undefined || key.deleted) throw notFound;
    const v = version === undefined || version === "" ? key.versions[key.versions.length - 1] : key.versions.find((candidate) => candidate.version === version);
    if (v === undefined) throw notFound;
    return { key, v };
  }

  function authorize(key: VaultKey, clientId: string, permission: string): void {
    if (key.denied.has(clientId)) {
      throw new VaultFault(
        403,
        "Forbidden",
        `The user, group or application 'appid=${clientId}' does not have keys ${permission} permission on key vault '${vaultName};location=local'.`,
        "ForbiddenByPolicy",
      );
    }
  }

  async function token(request: IncomingMessage, response: ServerResponse, tenant: string): Promise<void> {
    count("token");
    const form = new URLSearchParams((await readBody(request)).toString("utf8"));
    const client = clients.get(form.get("client_id") ?? "");
    if (form.get("grant_type") !== "client_credentials") {
      sendJson(response, 400, { error: "unsupported_grant_type", error_description: "AADSTS70003: The app requested an unsupported grant type." });
      return;
    }
    if (client === undefined || client.tenantId !== tenant) {
      sendJson(response, 400, { error: "unauthorized_client", error_description: `AADSTS700016: Application with identifier '${form.get("client_id") ?? ""}' was not found in the directory '${tenant}'.` });
      return;
    }
    if (client.assertion !== undefined) {
      if (form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || form.get("client_assertion") !== client.assertion) {
        sendJson(response, 401, { error: "invalid_client", error_description: "AADSTS700213: No matching federated identity record found for presented assertion." });
        return;
      }
    } else if (form.get("client_secret") !== client.secret) {
      sendJson(response, 401, { error: "invalid_client", error_description: "AADSTS7000215: Invalid client secret provided." });
      return;
    }
    if (form.get("scope") !== SCOPE) {
      sendJson(response, 400, { error: "invalid_scope", error_description: `AADSTS70011: The provided value for the input parameter 'scope' is not valid (${form.get("scope") ?? ""}).` });
      return;
    }
    const accessToken = randomBytes(24).toString("base64url");
    tokens.set(accessToken, { clientId: client.clientId, tenantId: tenant, expires: Date.now() + TOKEN_LIFETIME_S * 1000 });
    sendJson(response, 200, { token_type: "Bearer", expires_in: TOKEN_LIFETIME_S, ext_expires_in: TOKEN_LIFETIME_S, access_token: accessToken });
  }

  async function keyOperation(request: IncomingMessage, response: ServerResponse, url: URL, clientId: string): Promise<void> {
    const match = /^\/keys\/([A-Za-z0-9-]+)(?:\/([0-9a-f]*))?(?:\/(wrapkey|unwrapkey))?\/?$/.exec(url.pathname);
    if (match === null) throw new VaultFault(404, "NotFound", `no route ${url.pathname}`);
    const [, name = "", version, operation] = match;
    if (operation === undefined) {
      if (request.method !== "GET") throw new VaultFault(405, "MethodNotAllowed", "only GET");
      count("get");
      const { key, v } = findKey(name, version);
      authorize(key, clientId, "get");
      sendJson(response, 200, bundle(key, v));
      return;
    }
    if (request.method !== "POST") throw new VaultFault(405, "MethodNotAllowed", "only POST");
    count(operation);
    const body = JSON.parse((await readBody(request)).toString("utf8") || "{}") as { alg?: unknown; value?: unknown };
    const { key, v } = findKey(name, version);
    const permission = operation === "wrapkey" ? "wrapKey" : "unwrapKey";
    authorize(key, clientId, permission);
    if (typeof body.value !== "string" || typeof body.alg !== "string") throw new VaultFault(400, "BadParameter", "alg and value are required");
    const value = Buffer.from(body.value, "base64url");
    const publicOperation = operation === "wrapkey" && v.kty === "RSA";
    if (!key.enabled && !publicOperation) throw new VaultFault(403, "Forbidden", `Operation ${permission} is not allowed on a disabled key.`, "KeyDisabled");
    const result = operation === "wrapkey" ? wrap(v, body.alg, value) : unwrap(v, body.alg, value);
    sendJson(response, 200, { kid: `${vaultUrl()}/keys/${key.name}/${v.version}`, value: result.toString("base64url") });
  }

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? "/", `https://${request.headers.host ?? "localhost"}`);
    const tokenRoute = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(url.pathname);
    if (tokenRoute !== null && request.method === "POST") {
      await token(request, response, decodeURIComponent(tokenRoute[1] ?? ""));
      return;
    }
    if (url.hostname !== `${vaultName}.vault.localtest`) throw new VaultFault(404, "NotFound", `no vault at ${url.hostname}`);
    if (!/^7\.\d+|^20\d\d-\d\d-\d\d/.test(url.searchParams.get("api-version") ?? "")) {
      throw new VaultFault(400, "BadParameter", "The request URI contains an invalid or missing api-version.");
    }
    const caller = authenticate(request);
    if (caller === undefined) {
      // The challenge: the SDK sends its first request without a token (and without a body) to learn the authority.
      await readBody(request);
      challenge(response, request.headers["authorization"] === undefined ? undefined : "invalid_token");
      return;
    }
    await keyOperation(request, response, url, caller.clientId);
  }

  const listener = await listenRestartable(() =>
    createServer({ key: tls.key, cert: tls.cert }, (request, response) => {
      handle(request, response).catch((error: unknown) => {
        const fault = error instanceof VaultFault ? error : new VaultFault(500, "InternalServerError", "internal error");
        sendJson(response, fault.status, { error: { code: fault.code, message: fault.message, ...(fault.inner === undefined ? {} : { innerError: { code: fault.inner } }) } });
      });
    }),
  );
  port = listener.port;

  const agent = new Agent({
    ca: ca.cert,
    keepAlive: true,
    lookup: (_hostname, lookupOptions, callback) => {
      if ((lookupOptions as { all?: boolean }).all) (callback as (e: null, a: { address: string; family: number }[]) => void)(null, [{ address: "127.0.0.1", family: 4 }]);
      else (callback as (e: null, a: string, f: number) => void)(null, "127.0.0.1", 4);
    },
  });

  function key(name: string): VaultKey {
    const found = keys.get(name);
    if (found === undefined) throw new Error(`no key ${name}`);
    return found;
  }

  return {
    get vaultUrl() {
      return vaultUrl();
    },
    get authorityHost() {
      return authority();
    },
    tenantId: defaultTenant,
    agent,
    caPem: ca.cert,
    addClient(tenantId = defaultTenant) {
      const clientId = randomUUID();
      const clientSecret = randomBytes(18).toString("base64url");
      clients.set(clientId, { clientId, tenantId, secret: clientSecret, assertion: undefined });
      return { clientId, clientSecret };
    },
    addFederatedClient(assertion: string, tenantId = defaultTenant) {
      const clientId = randomUUID();
      clients.set(clientId, { clientId, tenantId, secret: undefined, assertion });
      return { clientId };
    },
    revokeClientSecret(clientId: string) {
      const client = clients.get(clientId);
      if (client !== undefined) client.secret = randomBytes(18).toString("base64url");
      for (const [token, owner] of tokens) if (owner.clientId === clientId) tokens.delete(token);
    },
    createKey(name: string, kty: KeyVaultKeyType = "RSA") {
      keys.set(name, { name, versions: [newVersion(kty)], enabled: true, deleted: false, denied: new Set() });
      return `${vaultUrl()}/keys/${name}`;
    },
    rotateKey(name: string) {
      const k = key(name);
      const v = newVersion(k.versions[0]?.kty ?? "RSA");
      k.versions.push(v);
      return `${vaultUrl()}/keys/${name}/${v.version}`;
    },
    setKeyEnabled(name: string, enabled: boolean) {
      key(name).enabled = enabled;
    },
    setKeyDeleted(name: string, deleted: boolean) {
      key(name).deleted = deleted;
    },
    setAccess(name: string, clientId: string, allowed: boolean) {
      if (allowed) key(name).denied.delete(clientId);
      else key(name).denied.add(clientId);
    },
    requestCounts: () => ({ ...counts }),
    stop: () => listener.stop(),
    start: () => listener.start(),
    async close() {
      await listener.stop();
      agent.destroy();
    },
  };
}

function wrap(v: VaultKeyVersion, alg: string, value: Buffer): Buffer {
  if (v.kty === "RSA" && alg === "RSA-OAEP-256" && v.rsa !== undefined) {
    return publicEncrypt({ key: v.rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, value);
  }
  if (v.kty === "oct-HSM" && alg === "A256KW" && v.aes !== undefined) {
    if (value.length < 16 || value.length % 8 !== 0) throw new VaultFault(400, "BadParameter", "A256KW wraps a multiple of 8 bytes, at least 16");
    const cipher = createCipheriv("id-aes256-wrap", v.aes, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
    return Buffer.concat([cipher.update(value), cipher.final()]);
  }
  throw new VaultFault(400, "BadParameter", `Algorithm ${alg} is not supported for key type ${v.kty}.`);
}

function unwrap(v: VaultKeyVersion, alg: string, value: Buffer): Buffer {
  try {
    if (v.kty === "RSA" && alg === "RSA-OAEP-256" && v.rsa !== undefined) {
      return privateDecrypt({ key: v.rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" }, value);
    }
    if (v.kty === "oct-HSM" && alg === "A256KW" && v.aes !== undefined) {
      const decipher = createDecipheriv("id-aes256-wrap", v.aes, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
      return Buffer.concat([decipher.update(value), decipher.final()]);
    }
  } catch {
    throw new VaultFault(400, "BadParameter", "The parameter is incorrect.");
  }
  throw new VaultFault(400, "BadParameter", `Algorithm ${alg} is not supported for key type ${v.kty}.`);
}

function sendJson(response: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (response.headersSent) return;
  const text = JSON.stringify(body);
  response.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), ...headers });
  response.end(text);
}
