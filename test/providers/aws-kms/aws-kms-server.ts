/**
 * A local AWS KMS that speaks the service's wire protocol — AWS JSON 1.1 over
 * HTTP POST to "/", the operation in `X-Amz-Target: TrentService.<Op>`, every
 * request SigV4-signed and verified — so the real @aws-sdk/client-kms is
 * tested end to end. It implements the operations the provider uses
 * (Encrypt, Decrypt, DescribeKey) and can simulate: a key disabled or pending
 * deletion, access withdrawn from a caller, the service stopped, and
 * (through the blob itself) tampered ciphertext and the wrong key.
 *
 * Its ciphertext blobs are its own format (AES-256-GCM under the key's
 * material, the encryption context as AAD), not AWS's; callers treat them as
 * opaque, as they must with AWS's.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { listenRestartable, readBody, type RestartableHttpServer } from "../restartable-http-server.js";
import { verifySigV4, type SigV4Credential } from "./sigv4-verifier.js";

export type AwsKeyState = "Enabled" | "Disabled" | "PendingDeletion";

interface LocalKey {
  readonly keyId: string;
  readonly arn: string;
  readonly material: Buffer;
  state: AwsKeyState;
  /** Access key ids refused for this key (its key policy no longer grants them). */
  readonly denied: Set<string>;
  /** Actions the key policy grants nobody ("Decrypt": a key one may encrypt with but not decrypt). */
  readonly deniedActions: Set<string>;
}

export interface AwsKmsServerOptions {
  readonly region?: string;
  readonly accountId?: string;
  readonly credentials: readonly SigV4Credential[];
  /** The server's clock, for the signature's time check. */
  readonly now?: () => Date;
}

export interface AwsKmsServer {
  readonly endpoint: string;
  readonly region: string;
  /** Creates a symmetric key, optionally with an alias ("alias/name"); returns its ARN. */
  createKey(alias?: string): string;
  setKeyState(arn: string, state: AwsKeyState): void;
  /** Withdraws (or restores) a caller's permission to use a key. */
  setAccess(arn: string, accessKeyId: string, allowed: boolean): void;
  /** Grants or withdraws one action for every caller, as a key policy would. */
  setActionAllowed(arn: string, action: "Encrypt" | "Decrypt" | "GenerateDataKey", allowed: boolean): void;
  /** Requests served per operation, including refused ones. */
  requestCounts(): Readonly<Record<string, number>>;
  /** Requests whose signature did not verify. */
  readonly signatureFailures: number;
  /** The EncryptionContext of the last Encrypt or Decrypt (as CloudTrail would log it). */
  lastEncryptionContext(): Readonly<Record<string, string>> | undefined;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

class KmsFault extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

const BLOB_MAGIC = 0x4b; // 'K'
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export async function startAwsKmsServer(options: AwsKmsServerOptions): Promise<AwsKmsServer> {
  const region = options.region ?? "us-east-1";
  const accountId = options.accountId ?? "111122223333";
  const now = options.now ?? (() => new Date());
  const credentials = new Map(options.credentials.map((c) => [c.accessKeyId, c]));
  const keys = new Map<string, LocalKey>(); // by key id (UUID)
  const aliases = new Map<string, string>(); // alias name -> key id
  const counts: Record<string, number> = {};
  let signatureFailures = 0;
  let lastContext: Record<string, string> | undefined;

  function resolveKey(keyId: unknown): LocalKey {
    if (typeof keyId !== "string" || keyId === "") throw new KmsFault("ValidationException", "KeyId is required");
    let id = keyId;
    const arnPrefix = `arn:aws:kms:${region}:${accountId}:`;
    if (id.startsWith(arnPrefix)) id = id.slice(arnPrefix.length);
    else if (id.startsWith("arn:")) throw new KmsFault("NotFoundException", `Invalid keyId ${keyId}`);
    if (id.startsWith("alias/")) {
      const target = aliases.get(id);
      if (target === undefined) throw new KmsFault("NotFoundException", `Alias ${arnPrefix}${id} is not found.`);
      id = target;
    } else if (id.startsWith("key/")) {
      id = id.slice("key/".length);
    }
    const key = keys.get(id);
    if (key === undefined) throw new KmsFault("NotFoundException", `Key '${arnPrefix}key/${id}' does not exist`);
    return key;
  }

  function authorize(key: LocalKey, caller: string, action: string): void {
    if (key.denied.has(caller) || key.deniedActions.has(action)) {
      throw new KmsFault(
        "AccessDeniedException",
        `User: arn:aws:iam::${accountId}:user/${caller} is not authorized to perform: kms:${action} on resource: ${key.arn} because no resource-based policy allows the kms:${action} action`,
      );
    }
  }

  function requireUsable(key: LocalKey): void {
    if (key.state === "Disabled") throw new KmsFault("DisabledException", `${key.arn} is disabled.`);
    if (key.state === "PendingDeletion") throw new KmsFault("KMSInvalidStateException", `${key.arn} is pending deletion.`);
  }

  const operations: Record<string, (input: Record<string, unknown>, caller: string) => Record<string, unknown>> = {
    DescribeKey(input, caller) {
      const key = resolveKey(input["KeyId"]);
      authorize(key, caller, "DescribeKey");
      return {
        KeyMetadata: {
          AWSAccountId: accountId,
          KeyId: key.keyId,
          Arn: key.arn,
          Enabled: key.state === "Enabled",
          KeyState: key.state,
          KeyUsage: "ENCRYPT_DECRYPT",
          KeySpec: "SYMMETRIC_DEFAULT",
          KeyManager: "CUSTOMER",
          Origin: "AWS_KMS",
          EncryptionAlgorithms: ["SYMMETRIC_DEFAULT"],
        },
      };
    },
    Encrypt(input, caller) {
      const key = resolveKey(input["KeyId"]);
      authorize(key, caller, "Encrypt");
      requireUsable(key);
      checkAlgorithm(input["EncryptionAlgorithm"]);
      const plaintext = blob(input["Plaintext"], "Plaintext");
      if (plaintext.length < 1 || plaintext.length > 4096) throw new KmsFault("ValidationException", "Plaintext must be 1 to 4096 bytes");
      const aad = encodeContext(input["EncryptionContext"], (context) => (lastContext = { ...context }));
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv("aes-256-gcm", key.material, nonce);
      cipher.setAAD(Buffer.concat([Buffer.from(key.keyId), aad]));
      const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
      const keyIdBytes = Buffer.from(key.keyId, "ascii");
      const out = Buffer.concat([Buffer.from([BLOB_MAGIC, keyIdBytes.length]), keyIdBytes, nonce, ciphertext, cipher.getAuthTag()]);
      return { CiphertextBlob: out.toString("base64"), KeyId: key.arn, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
    },
    Decrypt(input, caller) {
      checkAlgorithm(input["EncryptionAlgorithm"]);
      const data = blob(input["CiphertextBlob"], "CiphertextBlob");
      const parsed = parseBlob(data);
      if (parsed === undefined) throw new KmsFault("InvalidCiphertextException", "");
      const named = input["KeyId"] === undefined ? undefined : resolveKey(input["KeyId"]);
      const key = keys.get(parsed.keyId);
      if (named !== undefined && named.keyId !== parsed.keyId) {
        authorize(named, caller, "Decrypt");
        throw new KmsFault("IncorrectKeyException", "The key ID in the request does not identify a KMS key that can perform this operation.");
      }
      if (key === undefined) throw new KmsFault("InvalidCiphertextException", "");
      authorize(key, caller, "Decrypt");
      requireUsable(key);
      const aad = encodeContext(input["EncryptionContext"], (context) => (lastContext = { ...context }));
      let plaintext: Buffer;
      try {
        const decipher = createDecipheriv("aes-256-gcm", key.material, parsed.nonce);
        decipher.setAAD(Buffer.concat([Buffer.from(key.keyId), aad]));
        decipher.setAuthTag(parsed.tag);
        plaintext = Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]);
      } catch {
        throw new KmsFault("InvalidCiphertextException", "");
      }
      return { Plaintext: plaintext.toString("base64"), KeyId: key.arn, EncryptionAlgorithm: "SYMMETRIC_DEFAULT" };
    },
  };

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const body = await readBody(request);
    const target = String(request.headers["x-amz-target"] ?? "");
    const operation = target.startsWith("TrentService.") ? target.slice("TrentService.".length) : "";
    counts[operation || "(none)"] = (counts[operation || "(none)"] ?? 0) + 1;
    try {
      if (request.method !== "POST" || request.url !== "/") throw new KmsFault("UnknownOperationException", "only POST / is served", 404);
      const verified = verifySigV4(
        { method: request.method, url: request.url, headers: request.headers, body },
        { region, service: "kms", now: now() },
        (id) => credentials.get(id),
      );
      if (!verified.ok) {
        signatureFailures += 1;
        throw new KmsFault(verified.error, verified.message, verified.error === "MissingAuthenticationTokenException" ? 403 : 400);
      }
      const contentType = String(request.headers["content-type"] ?? "");
      if (!contentType.startsWith("application/x-amz-json-1.1")) throw new KmsFault("SerializationException", "Content-Type must be application/x-amz-json-1.1");
      const run = operations[operation];
      if (run === undefined) throw new KmsFault("UnknownOperationException", `Unknown operation ${target}`);
      let input: unknown;
      try {
        input = JSON.parse(body.toString("utf8") || "{}");
      } catch {
        throw new KmsFault("SerializationException", "body is not JSON");
      }
      if (typeof input !== "object" || input === null || Array.isArray(input)) throw new KmsFault("SerializationException", "body is not a JSON object");
      send(response, 200, run(input as Record<string, unknown>, verified.accessKeyId));
    } catch (error) {
      const fault = error instanceof KmsFault ? error : new KmsFault("KMSInternalException", "internal error", 500);
      response.setHeader("x-amzn-ErrorType", fault.type);
      send(response, fault.status, { __type: fault.type, message: fault.message });
    }
  }

  const listener: RestartableHttpServer = await listenRestartable(() =>
    createServer((request, response) => {
      handle(request, response).catch(() => {
        if (!response.headersSent) send(response, 500, { __type: "KMSInternalException", message: "internal error" });
      });
    }),
  );

  return {
    get endpoint() {
      return `http://127.0.0.1:${listener.port}`;
    },
    region,
    createKey(alias?: string): string {
      const keyId = randomUUID();
      const arn = `arn:aws:kms:${region}:${accountId}:key/${keyId}`;
      keys.set(keyId, { keyId, arn, material: randomBytes(32), state: "Enabled", denied: new Set(), deniedActions: new Set() });
      if (alias !== undefined) aliases.set(alias, keyId);
      return arn;
    },
    setKeyState(arn: string, state: AwsKeyState): void {
      resolveKey(arn).state = state;
    },
    setAccess(arn: string, accessKeyId: string, allowed: boolean): void {
      const key = resolveKey(arn);
      if (allowed) key.denied.delete(accessKeyId);
      else key.denied.add(accessKeyId);
    },
    setActionAllowed(arn: string, action: "Encrypt" | "Decrypt" | "GenerateDataKey", allowed: boolean): void {
      const key = resolveKey(arn);
      if (allowed) key.deniedActions.delete(action);
      else key.deniedActions.add(action);
    },
    requestCounts: () => ({ ...counts }),
    lastEncryptionContext: () => lastContext,
    get signatureFailures() {
      return signatureFailures;
    },
    stop: () => listener.stop(),
    start: () => listener.start(),
    close: () => listener.stop(),
  };
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    "content-type": "application/x-amz-json-1.1",
    "content-length": Buffer.byteLength(text),
    "x-amzn-requestid": randomUUID(),
  });
  response.end(text);
}

function checkAlgorithm(value: unknown): void {
  if (value !== undefined && value !== "SYMMETRIC_DEFAULT") {
    throw new KmsFault("InvalidKeyUsageException", `EncryptionAlgorithm ${String(value)} is not supported by a symmetric key`);
  }
}

function blob(value: unknown, field: string): Buffer {
  if (typeof value !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) throw new KmsFault("SerializationException", `${field} must be base64`);
  return Buffer.from(value, "base64");
}

/** The encryption context as unambiguous bytes: pairs sorted by key, each part length-prefixed. */
function encodeContext(value: unknown, record?: (context: Record<string, string>) => void): Buffer {
  if (value === undefined) return Buffer.alloc(0);
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new KmsFault("ValidationException", "EncryptionContext must be a map");
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (typeof v !== "string") throw new KmsFault("ValidationException", "EncryptionContext values must be strings");
    for (const s of [k, v]) {
      const bytes = Buffer.from(s, "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32BE(bytes.length);
      parts.push(length, bytes);
    }
  }
  record?.(value as Record<string, string>);
  return Buffer.concat(parts);
}

function parseBlob(data: Buffer): { keyId: string; nonce: Buffer; ciphertext: Buffer; tag: Buffer } | undefined {
  if (data.length < 2 || data[0] !== BLOB_MAGIC) return undefined;
  const idLength = data[1] ?? 0;
  const start = 2 + idLength;
  if (data.length < start + NONCE_BYTES + TAG_BYTES) return undefined;
  return {
    keyId: data.subarray(2, start).toString("ascii"),
    nonce: data.subarray(start, start + NONCE_BYTES),
    ciphertext: data.subarray(start + NONCE_BYTES, data.length - TAG_BYTES),
    tag: data.subarray(data.length - TAG_BYTES),
  };
}
