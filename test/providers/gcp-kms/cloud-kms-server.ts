/**
 * A local Cloud KMS: the real `google.cloud.kms.v1.KeyManagementService` gRPC
 * service (Encrypt, Decrypt) served by @grpc/grpc-js from the .proto files
 * shipped in google-proto-files, so @google-cloud/kms talks to it unchanged.
 *
 * Like the service it checks every CRC32C field a request carries (refusing
 * a mismatch with INVALID_ARGUMENT), says which it checked (`verified_*`), and
 * puts CRC32C checksums on what it returns. It can simulate: a key version
 * disabled or destroyed, IAM access withdrawn, the service stopped, responses
 * corrupted in transit, and (through the blob) tampered ciphertext and the
 * wrong key. Its ciphertexts are its own format (AES-256-GCM, the version id
 * in clear), opaque to callers as Google's are.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { getProtoPath } from "google-proto-files";
import { crc32c } from "../../../server/src/providers/gcp-kms/crc32c.js";

export type VersionState = "ENABLED" | "DISABLED" | "DESTROYED" | "DESTROY_SCHEDULED";

interface KeyVersion {
  readonly id: number;
  readonly material: Buffer;
  state: VersionState;
}

interface CryptoKey {
  readonly name: string;
  readonly versions: KeyVersion[];
  primary: number;
  denied: boolean;
}

export interface CloudKmsServer {
  /** host:port of the plaintext gRPC listener. */
  readonly host: string;
  readonly port: number;
  /** Creates a CryptoKey (with version 1 as primary) and returns its resource name. */
  createKey(keyRing: string, keyId: string): string;
  /** Adds a new primary version (rotation); returns its number. */
  rotateKey(name: string): number;
  setVersionState(name: string, version: number, state: VersionState): void;
  /** The primary version's state, for short. */
  setPrimaryState(name: string, state: VersionState): void;
  /** Withdraws (or restores) the caller's IAM access to the key. */
  setAccess(name: string, allowed: boolean): void;
  /** Flips one byte of each returned ciphertext/plaintext after its checksum is computed (corruption in transit). */
  corruptResponses(on: boolean): void;
  /** Calls served per method, refused ones included. */
  requestCounts(): Readonly<Record<string, number>>;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

const PROJECT_LOCATION = "projects/matih-test/locations/global";
const MAGIC = 0x47; // 'G'
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

class Fault extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

function loadService(): grpc.ServiceDefinition {
  const includeDir = dirname(getProtoPath()); // the package root, which holds google/...
  const definition = protoLoader.loadSync("google/cloud/kms/v1/service.proto", {
    includeDirs: [includeDir],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: false,
    oneofs: true,
  });
  // For a service name, proto-loader returns the service definition itself (method name -> method).
  const service = definition["google.cloud.kms.v1.KeyManagementService"];
  if (service === undefined) throw new Error("google.cloud.kms.v1.KeyManagementService not found in google-proto-files");
  return service as unknown as grpc.ServiceDefinition;
}

export async function startCloudKmsServer(): Promise<CloudKmsServer> {
  const serviceDefinition = loadService();
  const keys = new Map<string, CryptoKey>();
  const counts: Record<string, number> = {};
  let corrupt = false;

  function keyFor(name: unknown, permission: string): { key: CryptoKey; version: KeyVersion | undefined } {
    if (typeof name !== "string" || name === "") throw new Fault(grpc.status.INVALID_ARGUMENT, "name is required");
    const match = /^(projects\/[^/]+\/locations\/[^/]+\/keyRings\/[^/]+\/cryptoKeys\/[^/]+)(?:\/cryptoKeyVersions\/(\d+))?$/.exec(name);
    if (match === null) throw new Fault(grpc.status.INVALID_ARGUMENT, `Resource name [${name}] does not match any known type`);
    const key = keys.get(match[1] ?? "");
    if (key === undefined || key.denied) {
      // Cloud KMS does not reveal whether a resource exists to a caller without access.
      throw new Fault(grpc.status.PERMISSION_DENIED, `Permission '${permission}' denied on resource '${name}' (or it may not exist).`);
    }
    const version = match[2] === undefined ? undefined : key.versions.find((v) => v.id === Number(match[2]));
    if (match[2] !== undefined && version === undefined) throw new Fault(grpc.status.NOT_FOUND, `${name} not found.`);
    return { key, version };
  }

  function requireEnabled(key: CryptoKey, version: KeyVersion): void {
    if (version.state !== "ENABLED") {
      throw new Fault(grpc.status.FAILED_PRECONDITION, `${key.name}/cryptoKeyVersions/${version.id} is not enabled, current state is: ${version.state}.`);
    }
  }

  function checkCrc(data: Buffer, field: string, dataField: string, checksum: { value?: string } | null | undefined): boolean {
    if (checksum === null || checksum === undefined) return false;
    if (String(crc32c(data)) !== String(checksum.value ?? "0")) {
      throw new Fault(grpc.status.INVALID_ARGUMENT, `The checksum in field ${field} did not match the data in field ${dataField}.`);
    }
    return true;
  }

  function flip(data: Buffer): Buffer {
    if (!corrupt || data.length === 0) return data;
    const copy = Buffer.from(data);
    copy[copy.length >> 1] = (copy[copy.length >> 1] ?? 0) ^ 0x01;
    return copy;
  }

  type Request = Record<string, unknown>;
  function unary(method: string, run: (request: Request) => Record<string, unknown>): grpc.handleUnaryCall<Request, Record<string, unknown>> {
    return (call, callback) => {
      counts[method] = (counts[method] ?? 0) + 1;
      try {
        callback(null, run(call.request));
      } catch (error) {
        const fault = error instanceof Fault ? error : new Fault(grpc.status.INTERNAL, "internal error");
        callback({ code: fault.code, details: fault.message, metadata: new grpc.Metadata() } as grpc.ServiceError, null);
      }
    };
  }

  const implementation: grpc.UntypedServiceImplementation = {
    Encrypt: unary("Encrypt", (request) => {
      const { key, version: named } = keyFor(request["name"], "cloudkms.cryptoKeyVersions.useToEncrypt");
      const version = named ?? key.versions.find((v) => v.id === key.primary);
      if (version === undefined) throw new Fault(grpc.status.FAILED_PRECONDITION, `${key.name} has no primary version`);
      requireEnabled(key, version);
      const plaintext = (request["plaintext"] as Buffer | undefined) ?? Buffer.alloc(0);
      const aad = (request["additionalAuthenticatedData"] as Buffer | undefined) ?? Buffer.alloc(0);
      if (plaintext.length === 0 || plaintext.length > 64 * 1024) throw new Fault(grpc.status.INVALID_ARGUMENT, "plaintext must be 1 byte to 64 KiB");
      const verifiedPlaintext = checkCrc(plaintext, "plaintext_crc32c", "plaintext", request["plaintextCrc32c"] as { value?: string } | undefined);
      const verifiedAad = checkCrc(aad, "additional_authenticated_data_crc32c", "additional_authenticated_data", request["additionalAuthenticatedDataCrc32c"] as { value?: string } | undefined);
      const header = Buffer.alloc(5);
      header[0] = MAGIC;
      header.writeUInt32BE(version.id, 1);
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv("aes-256-gcm", version.material, nonce);
      cipher.setAAD(Buffer.concat([Buffer.from(key.name), header, aad]));
      const sealed = Buffer.concat([header, nonce, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
      return {
        name: `${key.name}/cryptoKeyVersions/${version.id}`,
        ciphertext: flip(sealed),
        ciphertextCrc32c: { value: String(crc32c(sealed)) },
        verifiedPlaintextCrc32c: verifiedPlaintext,
        verifiedAdditionalAuthenticatedDataCrc32c: verifiedAad,
        protectionLevel: "SOFTWARE",
      };
    }),
    Decrypt: unary("Decrypt", (request) => {
      const { key, version: named } = keyFor(request["name"], "cloudkms.cryptoKeyVersions.useToDecrypt");
      if (named !== undefined) throw new Fault(grpc.status.INVALID_ARGUMENT, "Decrypt takes a CryptoKey name, not a CryptoKeyVersion");
      const ciphertext = (request["ciphertext"] as Buffer | undefined) ?? Buffer.alloc(0);
      const aad = (request["additionalAuthenticatedData"] as Buffer | undefined) ?? Buffer.alloc(0);
      checkCrc(ciphertext, "ciphertext_crc32c", "ciphertext", request["ciphertextCrc32c"] as { value?: string } | undefined);
      checkCrc(aad, "additional_authenticated_data_crc32c", "additional_authenticated_data", request["additionalAuthenticatedDataCrc32c"] as { value?: string } | undefined);
      const invalid = new Fault(grpc.status.INVALID_ARGUMENT, "Decryption failed: verify that 'name' refers to the correct CryptoKey.");
      if (ciphertext.length < 5 + NONCE_BYTES + TAG_BYTES || ciphertext[0] !== MAGIC) throw invalid;
      const header = ciphertext.subarray(0, 5);
      const version = key.versions.find((v) => v.id === header.readUInt32BE(1));
      if (version === undefined) throw invalid;
      requireEnabled(key, version);
      let plaintext: Buffer;
      try {
        const decipher = createDecipheriv("aes-256-gcm", version.material, ciphertext.subarray(5, 5 + NONCE_BYTES));
        decipher.setAAD(Buffer.concat([Buffer.from(key.name), header, aad]));
        decipher.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_BYTES));
        plaintext = Buffer.concat([decipher.update(ciphertext.subarray(5 + NONCE_BYTES, ciphertext.length - TAG_BYTES)), decipher.final()]);
      } catch {
        throw invalid;
      }
      return {
        plaintext: flip(plaintext),
        plaintextCrc32c: { value: String(crc32c(plaintext)) },
        usedPrimary: version.id === key.primary,
        protectionLevel: "SOFTWARE",
      };
    }),
  };

  let server: grpc.Server | undefined;
  let port = 0;
  async function start(): Promise<void> {
    if (server !== undefined) return;
    const next = new grpc.Server();
    next.addService(serviceDefinition, implementation);
    port = await new Promise<number>((resolve, reject) =>
      next.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    server = next;
  }
  async function stop(): Promise<void> {
    server?.forceShutdown();
    server = undefined;
  }
  await start();

  function setVersionState(name: string, version: number, state: VersionState): void {
    const v = key(name).versions.find((candidate) => candidate.id === version);
    if (v === undefined) throw new Error(`no version ${version} of ${name}`);
    v.state = state;
  }

  function key(name: string): CryptoKey {
    const found = keys.get(name);
    if (found === undefined) throw new Error(`no such key ${name}`);
    return found;
  }

  return {
    host: "127.0.0.1",
    get port() {
      return port;
    },
    createKey(keyRing: string, keyId: string): string {
      const name = `${PROJECT_LOCATION}/keyRings/${keyRing}/cryptoKeys/${keyId}`;
      keys.set(name, { name, versions: [{ id: 1, material: randomBytes(32), state: "ENABLED" }], primary: 1, denied: false });
      return name;
    },
    rotateKey(name: string): number {
      const k = key(name);
      const id = k.versions.length + 1;
      k.versions.push({ id, material: randomBytes(32), state: "ENABLED" });
      k.primary = id;
      return id;
    },
    setVersionState,
    setPrimaryState(name: string, state: VersionState): void {
      setVersionState(name, key(name).primary, state);
    },
    setAccess(name: string, allowed: boolean): void {
      key(name).denied = !allowed;
    },
    corruptResponses(on: boolean): void {
      corrupt = on;
    },
    requestCounts: () => ({ ...counts }),
    stop,
    start,
    close: stop,
  };
}
