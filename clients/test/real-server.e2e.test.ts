/**
 * The client against the REAL server (startKms, development mode) over a
 * socket: every transport, typed errors, envelope encryption, the DEK cache's
 * single flight, and invalidation pushed by WatchKeyEvents with the measured
 * delay from the revoke call to the first refused local decrypt.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, type Interceptor } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKmsClient, type KmsClient } from "../src/client/kms-client.js";
import { createEnvelopeEncryption } from "../src/envelope/envelope-encryption.js";
import { KmsError } from "../src/errors/kms-error.js";
import { ErrorReason } from "../src/gen.js";
import { createKmsConnectTransport, createKmsGrpcTransport } from "../src/transport/grpc-transport.js";
import { createKmsRestTransport } from "../src/transport/rest-transport.js";
import { KeyEventType, KeyState } from "../../gen/matih/kms/v1/resources_pb.js";
import { issueClientCertificate } from "../../server/src/tls/dev-pki.js";
import { startRealKms, type RealKms } from "./support/real-kms.js";

async function refusalOf(promise: Promise<unknown>): Promise<KmsError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(KmsError);
    return error as KmsError;
  }
  throw new Error("expected a refusal");
}

/** Counts the RPCs a transport makes, by method name. */
function rpcCounter() {
  const counts: Record<string, number> = {};
  const interceptor: Interceptor = (next) => (req) => {
    counts[req.method.name] = (counts[req.method.name] ?? 0) + 1;
    return next(req);
  };
  return { counts, interceptor };
}

describe("the client against the real server", () => {
  let server: RealKms;
  let grpc: KmsClient;

  beforeAll(async () => {
    server = await startRealKms();
    grpc = createKmsClient({
      transport: createKmsGrpcTransport({ baseUrl: server.url, tls: { ca: { path: server.files.ca }, cert: { path: server.files.cert }, key: { path: server.files.key } } }),
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  describe("transports", () => {
    it("gRPC over mTLS with the certificate, key and CA read from files: CreateKey → GenerateDataKey → Decrypt", async () => {
      await grpc.keys.createKey({ tenantId: "files", keyId: "pii" });
      const generated = await grpc.dataKeys.generateDataKey({ tenantId: "files", keyId: "pii" });
      expect(generated.plaintext.length).toBe(32);
      const decrypted = await grpc.dataKeys.decrypt({ tenantId: "files", keyId: "pii", reference: generated.reference });
      expect(Buffer.from(decrypted.plaintext).equals(Buffer.from(generated.plaintext))).toBe(true);
    });

    it("gRPC over mTLS with the certificate, key and CA given as buffers", async () => {
      const client = createKmsClient({
        transport: createKmsGrpcTransport({
          baseUrl: server.url,
          tls: { ca: await readFile(server.files.ca), cert: await readFile(server.files.cert), key: await readFile(server.files.key) },
        }),
      });
      await client.keys.createKey({ tenantId: "buffers", keyId: "pii" });
      expect((await client.dataKeys.generateDataKey({ tenantId: "buffers", keyId: "pii" })).dekVersion).toBe(1);
    });

    it("gRPC over mTLS picks up renewed certificate files without a restart: an expired identity is refused, the renewed one accepted", async () => {
      const dir = await mkdtemp(join(tmpdir(), "kms-client-tls-"));
      try {
        const caKey = await readFile(join(server.files.ca, "..", "ca-key.pem"), "utf8");
        const expired = await issueClientCertificate(
          { cert: server.pem.ca, key: caKey },
          { notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) },
        );
        const files = { ca: join(dir, "ca.pem"), cert: join(dir, "tls.crt"), key: join(dir, "tls.key") };
        await writeFile(files.ca, server.pem.ca);
        await writeFile(files.cert, expired.cert);
        await writeFile(files.key, expired.key);
        const client = createKmsClient({
          transport: createKmsGrpcTransport({ baseUrl: server.url, reloadIntervalMs: 20, tls: { ca: { path: files.ca }, cert: { path: files.cert }, key: { path: files.key } } }),
        });
        expect((await refusalOf(client.keys.listKeys({ tenantId: "renewed" }))).reason).toBe(ErrorReason.CLIENT_CERTIFICATE_UNTRUSTED);
        // cert-manager writes the renewed pair
        await writeFile(files.key, server.pem.key);
        await writeFile(files.cert, server.pem.cert);
        // authenticated now: the tenant has no keys, and says so
        await expectEventually(async () => (await refusalOf(client.keys.listKeys({ tenantId: "renewed" }))).reason === ErrorReason.TENANT_NOT_FOUND);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });

    it("the Connect protocol over mTLS", async () => {
      const client = createKmsClient({ transport: createKmsConnectTransport({ baseUrl: server.url, tls: { ...server.pem } }) });
      await client.keys.createKey({ tenantId: "connect", keyId: "pii" });
      const generated = await client.dataKeys.generateDataKey({ tenantId: "connect", keyId: "pii" });
      const decrypted = await client.dataKeys.decrypt({ tenantId: "connect", keyId: "pii", reference: generated.reference });
      expect(decrypted.dekVersion).toBe(1);
    });

    it("REST for a tenant with a bearer token: create, list, get, rotate, status, revoke at the documented paths", async () => {
      const tenant = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: () => server.tokenFor("rest-acme") }) });
      const { key } = await tenant.keys.createKey({ tenantId: "rest-acme", keyId: "orders", description: "orders table" });
      expect(key).toMatchObject({ tenantId: "rest-acme", keyId: "orders", description: "orders table", state: KeyState.ENABLED, primaryDekVersion: 1 });
      const listed = await tenant.keys.listKeys({ tenantId: "rest-acme", pageSize: 10, state: KeyState.ENABLED });
      expect(listed.keys.map((k) => k.keyId)).toEqual(["orders"]);
      expect((await tenant.keys.getKey({ tenantId: "rest-acme", keyId: "orders" })).key?.description).toBe("orders table");
      expect((await tenant.keys.rotateKey({ tenantId: "rest-acme", keyId: "orders" })).key?.primaryDekVersion).toBe(2);
      const status = await tenant.keys.getEncryptionStatus({ tenantId: "rest-acme" });
      expect(status.keys.map((k) => k.keyId)).toEqual(["orders"]);
      expect((await tenant.keys.revokeKey({ tenantId: "rest-acme", keyId: "orders" })).key?.state).toBe(KeyState.REVOKED);
    });

    it("typed errors: the same refusal carries the same code and ErrorReason over gRPC, Connect and REST", async () => {
      const connect = createKmsClient({ transport: createKmsConnectTransport({ baseUrl: server.url, tls: { ...server.pem } }) });
      const rest = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: await server.tokenFor("nobody") }) });
      for (const client of [grpc, connect, rest]) {
        const error = await refusalOf(client.keys.getKey({ tenantId: "nobody", keyId: "absent" }));
        expect({ code: error.code, reason: error.reasonName }).toEqual({ code: Code.NotFound, reason: expect.stringMatching(/^(KEY|TENANT)_NOT_FOUND$/) });
      }
    });

    it("typed errors over REST: another tenant's path is TENANT_FORBIDDEN; a forged token is TOKEN_INVALID", async () => {
      const tenant = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: await server.tokenFor("rest-a") }) });
      expect((await refusalOf(tenant.keys.listKeys({ tenantId: "rest-b" }))).reason).toBe(ErrorReason.TENANT_FORBIDDEN);
      const forged = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: "not.a.token" }) });
      expect((await refusalOf(forged.keys.listKeys({ tenantId: "rest-a" }))).reason).toBe(ErrorReason.TOKEN_INVALID);
      const anonymous = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca }) });
      expect((await refusalOf(anonymous.keys.listKeys({ tenantId: "rest-a" }))).reason).toBe(ErrorReason.CREDENTIALS_MISSING);
    });

    it("REST with a client certificate: the hot path (bytes as base64, a custom verb in the path)", async () => {
      const service = createKmsClient({
        transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, clientCertificate: { cert: server.pem.cert, key: server.pem.key } }),
      });
      await service.keys.createKey({ tenantId: "rest-mtls", keyId: "pii" });
      const generated = await service.dataKeys.generateDataKey({ tenantId: "rest-mtls", keyId: "pii" });
      const decrypted = await service.dataKeys.decrypt({ tenantId: "rest-mtls", keyId: "pii", reference: generated.reference });
      expect(Buffer.from(decrypted.plaintext).equals(Buffer.from(generated.plaintext))).toBe(true);
    });

    it("REST carries the event stream as newline-delimited JSON: a tenant watches its own key events and resumes after a cursor", async () => {
      const tenant = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: () => server.tokenFor("rest-watch") }) });
      const abort = new AbortController();
      const seen: { type: KeyEventType; keyId: string; cursor: string }[] = [];
      let opened = false;
      const watching = (async () => {
        for await (const { event } of tenant.keyEvents.watchKeyEvents({ tenantId: "rest-watch" }, { signal: abort.signal, onHeader: () => (opened = true) })) {
          if (event !== undefined) seen.push({ type: event.type, keyId: event.keyId, cursor: event.cursor });
          if (seen.length === 2) abort.abort();
        }
      })().catch((error: unknown) => error);
      await expectEventually(() => opened);
      await tenant.keys.createKey({ tenantId: "rest-watch", keyId: "a" });
      await tenant.keys.revokeKey({ tenantId: "rest-watch", keyId: "a" });
      const ended = await watching;
      expect(ended === undefined || (ended instanceof KmsError && ended.code === Code.Canceled)).toBe(true);
      expect(seen.map((e) => [KeyEventType[e.type], e.keyId])).toEqual([
        ["KEY_CREATED", "a"],
        ["KEY_REVOKED", "a"],
      ]);

      // Resuming after the first event's cursor replays the second.
      const replay: KeyEventType[] = [];
      for await (const { event } of tenant.keyEvents.watchKeyEvents({ tenantId: "rest-watch", afterCursor: seen[0]?.cursor ?? "" })) {
        if (event !== undefined) replay.push(event.type);
        break; // ends the request
      }
      expect(replay).toEqual([KeyEventType.KEY_REVOKED]);
    });

    it("REST event stream: another tenant's events are TENANT_FORBIDDEN", async () => {
      const tenant = createKmsClient({ transport: createKmsRestTransport({ baseUrl: server.url, ca: server.pem.ca, token: await server.tokenFor("rest-a") }) });
      const iterate = async () => {
        for await (const _ of tenant.keyEvents.watchKeyEvents({ tenantId: "rest-b" })) break;
      };
      expect((await refusalOf(iterate())).reason).toBe(ErrorReason.TENANT_FORBIDDEN);
    });
  });

  describe("envelope encryption and the DEK cache", () => {
    it("encrypts and decrypts locally after one RPC each, across a rotation; old ciphertexts keep decrypting", async () => {
      await grpc.keys.createKey({ tenantId: "env", keyId: "pii" });
      const counter = rpcCounter();
      const kms = createKmsClient({ transport: createKmsGrpcTransport({ baseUrl: server.url, tls: { ...server.pem }, interceptors: [counter.interceptor] }) });
      const envelope = createEnvelopeEncryption({ kms, cache: { maxAgeMs: 60_000 } });
      try {
        const context = { table: "customers", row: "1" };
        const first = await envelope.encrypt("env", "pii", Buffer.from("hello"), context);
        for (let i = 0; i < 50; i++) await envelope.encrypt("env", "pii", Buffer.from(`msg ${i}`), context);
        expect((await envelope.decrypt(first, context, { tenantId: "env", keyId: "pii" })).toString()).toBe("hello");
        expect(counter.counts).toMatchObject({ GenerateDataKey: 1 });
        expect(counter.counts["Decrypt"]).toBeUndefined();

        await grpc.keys.rotateKey({ tenantId: "env", keyId: "pii" });
        await new Promise((resolve) => setTimeout(resolve, 1_000)); // let DEK_ROTATED arrive
        const second = await envelope.encrypt("env", "pii", Buffer.from("after rotation"), context);
        expect(second.readUInt32BE(2)).toBe(2);
        expect((await envelope.decrypt(first, context)).toString()).toBe("hello");
        expect((await envelope.decrypt(second, context)).toString()).toBe("after rotation");
      } finally {
        await envelope.close();
      }
    });

    it("single flight on a cold cache: 2,000 decrypts over 20 DEKs by 64 concurrent callers make exactly 20 Decrypt RPCs", async () => {
      await grpc.keys.createKey({ tenantId: "flight", keyId: "k1" });
      await grpc.keys.createKey({ tenantId: "flight", keyId: "k2" });
      const writer = createEnvelopeEncryption({ kms: grpc, cache: { maxAgeMs: 60_000, events: false } });
      const ciphertexts: Buffer[] = [];
      for (let version = 1; version <= 10; version++) {
        for (const keyId of ["k1", "k2"]) for (let i = 0; i < 100; i++) ciphertexts.push(await writer.encrypt("flight", keyId, Buffer.from(`${keyId}/${version}/${i}`)));
        if (version < 10) for (const keyId of ["k1", "k2"]) await grpc.keys.rotateKey({ tenantId: "flight", keyId });
        writer.cache.clear();
      }
      await writer.close();

      const counter = rpcCounter();
      const kms = createKmsClient({ transport: createKmsGrpcTransport({ baseUrl: server.url, tls: { ...server.pem }, interceptors: [counter.interceptor] }) });
      const reader = createEnvelopeEncryption({ kms, cache: { maxAgeMs: 60_000, events: false } });
      const queue = ciphertexts.map((c, i) => ({ c, i })).sort(() => Math.random() - 0.5);
      let next = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (next < queue.length) {
            const { c } = queue[next++] as { c: Buffer };
            await reader.decrypt(c);
          }
        }),
      );
      expect(counter.counts["Decrypt"]).toBe(20);
      expect(reader.stats()).toMatchObject({ misses: 20, rpcs: { decrypt: 20 }, rpcsSaved: 1_980 });
      await reader.close();
    });

    it("invalidation from WatchKeyEvents: after RevokeKey the next local decrypt is refused KEY_REVOKED; prints the measured delay", async () => {
      await grpc.keys.createKey({ tenantId: "revoke", keyId: "pii" });
      const envelope = createEnvelopeEncryption({ kms: grpc, cache: { maxAgeMs: 300_000, fallbackMaxAgeMs: 5_000 } });
      try {
        const ciphertext = await envelope.encrypt("revoke", "pii", Buffer.from("soon unreadable"));
        await expectEventually(() => envelope.stats().eventStream.live);
        expect((await envelope.decrypt(ciphertext)).toString()).toBe("soon unreadable"); // a local hit

        const revokedAt = performance.now();
        await grpc.keys.revokeKey({ tenantId: "revoke", keyId: "pii" });
        let refused: KmsError | undefined;
        let localHits = 0;
        while (refused === undefined) {
          try {
            await envelope.decrypt(ciphertext);
            localHits++;
            await new Promise((resolve) => setTimeout(resolve, 1));
          } catch (error) {
            if (!(error instanceof KmsError)) throw error;
            refused = error;
          }
          if (performance.now() - revokedAt > 30_000) throw new Error("the revocation never reached the cache");
        }
        const delayMs = performance.now() - revokedAt;
        expect(refused.reason).toBe(ErrorReason.KEY_REVOKED);
        expect(envelope.stats().invalidations.events).toBeGreaterThanOrEqual(1);
        console.log(`revoke → first refused local decrypt: ${delayMs.toFixed(0)} ms (${localHits} local decrypts served in between)`);
      } finally {
        await envelope.close();
      }
    });

    it("invalidation from WatchKeyEvents: RevokeDekVersion drops that version only", async () => {
      await grpc.keys.createKey({ tenantId: "revoke-v", keyId: "pii" });
      const envelope = createEnvelopeEncryption({ kms: grpc, cache: { maxAgeMs: 300_000 } });
      try {
        await expectEventually(() => envelope.stats().eventStream.live);
        const v1 = await envelope.encrypt("revoke-v", "pii", Buffer.from("v1"));
        await grpc.keys.rotateKey({ tenantId: "revoke-v", keyId: "pii" });
        await expectEventually(() => envelope.stats().invalidations.events >= 1);
        const v2 = await envelope.encrypt("revoke-v", "pii", Buffer.from("v2"));
        expect(v2.readUInt32BE(2)).toBe(2);
        await grpc.keys.revokeDekVersion({ tenantId: "revoke-v", keyId: "pii", dekVersion: 1 });
        await expectEventually(async () => {
          try {
            await envelope.decrypt(v1);
            return false;
          } catch (error) {
            return error instanceof KmsError && error.reason === ErrorReason.DEK_VERSION_REVOKED;
          }
        });
        expect((await envelope.decrypt(v2)).toString()).toBe("v2");
      } finally {
        await envelope.close();
      }
    });
  });
});

async function expectEventually(check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > until) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
