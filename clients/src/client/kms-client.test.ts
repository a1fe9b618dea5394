import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createFakeKms, refusal } from "../../test/support/fake-kms.js";
import { KmsError } from "../errors/kms-error.js";
import { DataKeyService, ErrorReason, KeyManagementService } from "../gen.js";
import { errorFromResponse, restRequestFor } from "../transport/rest-transport.js";
import { KeyState } from "../../../gen/matih/kms/v1/resources_pb.js";
import {
  CreateKeyRequestSchema,
  GetKeyRequestSchema,
  ListKeysRequestSchema,
  RevokeDekVersionRequestSchema,
} from "../../../gen/matih/kms/v1/key_management_service_pb.js";
import { GenerateDataKeyRequestSchema } from "../../../gen/matih/kms/v1/data_key_service_pb.js";
import { createKmsClient, createServiceClient } from "./kms-client.js";
import { isIdempotent } from "./retry-policy.js";

async function failureOf(promise: Promise<unknown>): Promise<KmsError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(KmsError);
    return error as KmsError;
  }
  throw new Error("expected the call to fail");
}

/** Records the pauses between attempts instead of waiting. */
function recordingSleep() {
  const pauses: number[] = [];
  return { pauses, sleep: (ms: number) => (pauses.push(ms), Promise.resolve()) };
}

describe("the typed client (createKmsClient)", () => {
  it("throws KmsError exposing the server's ErrorReason, field, code and procedure", async () => {
    const kms = createFakeKms();
    const client = createKmsClient({ transport: kms.transport });
    const error = await failureOf(client.dataKeys.generateDataKey({ tenantId: "acme", keyId: "missing" }));
    expect(error).toMatchObject({ code: Code.NotFound, reason: ErrorReason.KEY_NOT_FOUND, reasonName: "KEY_NOT_FOUND", procedure: "matih.kms.v1.DataKeyService/GenerateDataKey", attempts: 1 });
    expect(error.message).toBe("[not_found KEY_NOT_FOUND] DataKeyService/GenerateDataKey: no key missing");
  });

  it("retries Unavailable with exponential backoff and full jitter on an idempotent call, then succeeds", async () => {
    const kms = createFakeKms();
    kms.createKey("acme", "pii");
    kms.failNext("generateDataKey", 3, refusal(Code.Unavailable, ErrorReason.PROVIDER_UNAVAILABLE, "provider down"));
    const { pauses, sleep } = recordingSleep();
    const failures: number[] = [];
    const client = createKmsClient({
      transport: kms.transport,
      retry: { maxAttempts: 4, initialBackoffMs: 100, maxBackoffMs: 250, random: () => 0.5 },
      sleep,
      onAttemptFailed: (f) => failures.push(f.attempt),
    });
    const response = await client.dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" });
    expect(response.dekVersion).toBe(1);
    expect(kms.calls.generateDataKey).toBe(4);
    expect(failures).toEqual([1, 2, 3]);
    expect(pauses).toEqual([50, 100, 125]); // 0.5 × min(250, 100·2^(n-1))
  });

  it("gives up after maxAttempts and reports how many attempts it made", async () => {
    const kms = createFakeKms();
    kms.createKey("acme", "pii");
    kms.failNext("decrypt", 10, refusal(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "draining"));
    const client = createKmsClient({ transport: kms.transport, retry: { maxAttempts: 3 }, sleep: recordingSleep().sleep });
    const error = await failureOf(client.dataKeys.decrypt({ tenantId: "acme", keyId: "pii", reference: new Uint8Array(40).fill(1) }));
    expect(error).toMatchObject({ code: Code.Unavailable, reason: ErrorReason.SHUTTING_DOWN, attempts: 3 });
    expect(kms.calls.decrypt).toBe(3);
  });

  it("does not retry codes that another attempt cannot fix", async () => {
    for (const [code, reason] of [
      [Code.InvalidArgument, ErrorReason.REFERENCE_TAMPERED],
      [Code.FailedPrecondition, ErrorReason.KEY_REVOKED],
      [Code.PermissionDenied, ErrorReason.TENANT_FORBIDDEN],
      [Code.ResourceExhausted, ErrorReason.BODY_TOO_LARGE],
      [Code.Internal, ErrorReason.INTERNAL],
      [Code.DeadlineExceeded, ErrorReason.UNSPECIFIED],
    ] as const) {
      const kms = createFakeKms();
      kms.createKey("acme", "pii");
      kms.failNext("generateDataKey", 1, refusal(code, reason, "no"));
      const client = createKmsClient({ transport: kms.transport, sleep: recordingSleep().sleep });
      const error = await failureOf(client.dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" }));
      expect(error.code).toBe(code);
      expect(kms.calls.generateDataKey, Code[code]).toBe(1);
    }
  });

  it("does not repeat a call that is not idempotent after Unavailable, but does when the server refused it while draining (SHUTTING_DOWN)", async () => {
    let calls = 0;
    let failure: ConnectError | undefined;
    const transport = createRouterTransport((router) =>
      router.service(KeyManagementService, {
        createKey(req) {
          calls++;
          if (failure !== undefined) {
            const f = failure;
            failure = undefined;
            throw f;
          }
          return { key: { tenantId: req.tenantId, keyId: req.keyId, state: KeyState.ENABLED } };
        },
      }),
    );
    const keys = createServiceClient(KeyManagementService, { transport, sleep: recordingSleep().sleep });
    failure = new ConnectError("connection reset", Code.Unavailable);
    await failureOf(keys.createKey({ tenantId: "acme", keyId: "pii" }));
    expect(calls).toBe(1);
    failure = refusal(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "draining");
    expect((await keys.createKey({ tenantId: "acme", keyId: "pii" })).key?.keyId).toBe("pii");
    expect(calls).toBe(3);
    expect(isIdempotent(KeyManagementService.method.rotateKey)).toBe(false);
    expect(isIdempotent(KeyManagementService.method.getKey)).toBe(true);
    expect(isIdempotent(DataKeyService.method.decrypt)).toBe(true);
  });

  it("puts a deadline on every unary call: the client's default when the call sets none, the call's own otherwise", async () => {
    const seen: (number | undefined)[] = [];
    const transport = createRouterTransport((router) =>
      router.service(DataKeyService, {
        async generateDataKey(_req, ctx) {
          seen.push(ctx.timeoutMs());
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          throw new ConnectError("aborted", Code.Canceled);
        },
      }),
    );
    const dataKeys = createServiceClient(DataKeyService, { transport, timeoutMs: 300, retry: false });
    const error = await failureOf(dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" }));
    expect(error.code).toBe(Code.DeadlineExceeded);
    await failureOf(dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" }, { timeoutMs: 100 }));
    expect(seen).toHaveLength(2);
    expect(seen[0]).toBeGreaterThan(100);
    expect(seen[0]).toBeLessThanOrEqual(300);
    expect(seen[1]).toBeLessThanOrEqual(100);
    expect(() => createServiceClient(DataKeyService, { transport, timeoutMs: 0 })).toThrow(/deadline/);
  });

  it("starts no retry that could not finish before the deadline", async () => {
    const kms = createFakeKms();
    kms.createKey("acme", "pii");
    kms.failNext("generateDataKey", 5, refusal(Code.Unavailable, ErrorReason.PROVIDER_UNAVAILABLE, "down"));
    const { pauses, sleep } = recordingSleep();
    const client = createKmsClient({ transport: kms.transport, timeoutMs: 1_000, retry: { initialBackoffMs: 5_000, maxBackoffMs: 5_000, random: () => 0.9 }, sleep });
    const error = await failureOf(client.dataKeys.generateDataKey({ tenantId: "acme", keyId: "pii" }));
    expect(error.attempts).toBe(1);
    expect(pauses).toEqual([]);
  });

  it("maps errors of a server stream to KmsError too", async () => {
    const kms = createFakeKms();
    kms.breakStreams(true);
    const client = createKmsClient({ transport: kms.transport });
    const iterate = async () => {
      for await (const _ of client.keyEvents.watchKeyEvents({ tenantId: "-" })) break;
    };
    const error = await failureOf(iterate());
    expect(error).toMatchObject({ code: Code.Unavailable, reason: ErrorReason.SHUTTING_DOWN, procedure: "matih.kms.v1.KeyEventService/WatchKeyEvents" });
  });
});

describe("the REST mapping (google.api.http annotations → method, path, query, body)", () => {
  it("POST with body '*': path fields go in the path, the rest in the JSON body", () => {
    const request = restRequestFor(KeyManagementService.method.createKey, create(CreateKeyRequestSchema, { tenantId: "acme", keyId: "pii", description: "customer PII" }));
    expect(request).toEqual({ httpMethod: "POST", pathAndQuery: "/api/v1/tenants/acme/encryption/keys", body: JSON.stringify({ keyId: "pii", description: "customer PII" }) });
  });

  it("GET: fields not in the path become query parameters (enums by name), defaults are left out", () => {
    const request = restRequestFor(KeyManagementService.method.listKeys, create(ListKeysRequestSchema, { tenantId: "acme", pageSize: 20, state: KeyState.ENABLED }));
    expect(request).toEqual({ httpMethod: "GET", pathAndQuery: "/api/v1/tenants/acme/encryption/keys?pageSize=20&state=KEY_STATE_ENABLED", body: undefined });
  });

  it("a custom verb after the last segment, and a numeric path variable", () => {
    expect(restRequestFor(DataKeyService.method.generateDataKey, create(GenerateDataKeyRequestSchema, { tenantId: "acme", keyId: "pii" })).pathAndQuery).toBe(
      "/api/v1/tenants/acme/encryption/keys/pii:generateDataKey",
    );
    expect(restRequestFor(KeyManagementService.method.revokeDekVersion, create(RevokeDekVersionRequestSchema, { tenantId: "acme", keyId: "pii", dekVersion: 3 })).pathAndQuery).toBe(
      "/api/v1/tenants/acme/encryption/keys/pii/versions/3:revoke",
    );
  });

  it("refuses to build a path with an empty variable instead of calling another route", () => {
    expect(() => restRequestFor(KeyManagementService.method.getKey, create(GetKeyRequestSchema, { tenantId: "acme" }))).toThrow(/key_id/);
  });

  it("turns an error body into the same ErrorDetail the RPC transports carry", () => {
    const error = KmsError.from(
      errorFromResponse(400, Buffer.from(JSON.stringify({ code: "failed_precondition", reason: "ERROR_REASON_KEY_REVOKED", message: "the key is revoked", field: "key_id" }))),
    );
    expect(error).toMatchObject({ code: Code.FailedPrecondition, reason: ErrorReason.KEY_REVOKED, field: "key_id", rawMessage: "the key is revoked" });
    expect(KmsError.from(errorFromResponse(503, Buffer.from("<html>bad gateway</html>")))).toMatchObject({ code: Code.Unavailable, reason: ErrorReason.UNSPECIFIED });
  });
});
