/**
 * An in-memory stand-in for matih-kms behind `createRouterTransport`: the
 * DataKeyService hot path (primary DEK per key, versions, references that
 * name tenant, key and version), KeyEventService (a live feed with history
 * and cursors, which a test can break and restore) and DatasetService's
 * inventory calls (recorded). Refusals carry the same ErrorDetail as the
 * real server's. The client under test cannot tell the difference in
 * behaviour the tests rely on; the real server is exercised in
 * clients/test/*.e2e.test.ts.
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type Transport } from "@connectrpc/connect";
import { DataKeyService } from "../../../gen/matih/kms/v1/data_key_service_pb.js";
import { DatasetService } from "../../../gen/matih/kms/v1/dataset_service_pb.js";
import { ErrorDetailSchema, ErrorReason } from "../../../gen/matih/kms/v1/errors_pb.js";
import { KeyEventService } from "../../../gen/matih/kms/v1/key_event_service_pb.js";
import { KeyEventSchema, KeyEventType, type DekVersionCount, type KeyEvent } from "../../../gen/matih/kms/v1/resources_pb.js";

export function refusal(code: Code, reason: ErrorReason, message: string): ConnectError {
  return new ConnectError(message, code, undefined, [{ desc: ErrorDetailSchema, value: { reason, field: "", metadata: {} } }]);
}

interface FakeKey {
  readonly uid: Buffer;
  readonly versions: Buffer[]; // index = version - 1
  primary: number;
  state: "enabled" | "revoked" | "destroyed";
  readonly revokedVersions: Set<number>;
}

export interface FakeKms {
  readonly transport: Transport;
  /** Every RPC the fake served, by method name. */
  readonly calls: { generateDataKey: number; decrypt: number; watchKeyEvents: number; reportInventory: number };
  readonly reports: { tenantId: string; keyId: string; datasetId: string; counts: DekVersionCount[] }[];
  createKey(tenantId: string, keyId: string): void;
  rotate(tenantId: string, keyId: string): number;
  revoke(tenantId: string, keyId: string): void;
  revokeVersion(tenantId: string, keyId: string, version: number): void;
  dekOf(tenantId: string, keyId: string, version: number): Buffer;
  /** Ends every open event stream with Unavailable; with `refuse`, new ones fail too until `restoreStreams`. */
  breakStreams(refuse?: boolean): void;
  restoreStreams(): void;
  /** Forgets the event history (a later resume gets EVENT_CURSOR_EXPIRED). */
  pruneHistory(): void;
  /** Makes the next `n` calls of `method` fail with `error`. */
  failNext(method: "generateDataKey" | "decrypt", n: number, error: ConnectError): void;
  /** Makes decrypt wait for `release()` (to hold a fetch in flight). */
  holdDecrypts(): { release(): void };
  openStreams(): number;
}

export function createFakeKms(): FakeKms {
  const keys = new Map<string, FakeKey>();
  const calls = { generateDataKey: 0, decrypt: 0, watchKeyEvents: 0, reportInventory: 0 };
  const reports: FakeKms["reports"] = [];
  const history: KeyEvent[] = [];
  let historyStart = 1;
  let nextEventId = 1;
  const subscribers = new Set<{ push(event: KeyEvent): void; fail(error: ConnectError): void }>();
  let refuseStreams = false;
  const failures: { method: string; n: number; error: ConnectError }[] = [];
  let hold: Promise<void> | undefined;

  const keyOf = (tenantId: string, keyId: string): FakeKey => {
    const key = keys.get(`${tenantId}/${keyId}`);
    if (key === undefined) throw refusal(Code.NotFound, ErrorReason.KEY_NOT_FOUND, `no key ${keyId}`);
    if (key.state === "revoked") throw refusal(Code.FailedPrecondition, ErrorReason.KEY_REVOKED, "the key is revoked");
    if (key.state === "destroyed") throw refusal(Code.FailedPrecondition, ErrorReason.KEY_DESTROYED, "the key is destroyed");
    return key;
  };
  const takeFailure = (method: string): void => {
    const failure = failures.find((f) => f.method === method && f.n > 0);
    if (failure !== undefined) {
      failure.n--;
      throw failure.error;
    }
  };
  const reference = (tenantId: string, keyId: string, key: FakeKey, version: number): Buffer => {
    const head = Buffer.alloc(1 + 16 + 4);
    head[0] = 1;
    key.uid.copy(head, 1);
    head.writeUInt32BE(version, 17);
    return Buffer.concat([head, Buffer.from([tenantId.length]), Buffer.from(tenantId), Buffer.from([keyId.length]), Buffer.from(keyId), randomBytes(16)]);
  };
  const emit = (tenantId: string, keyId: string, type: KeyEventType, dekVersion = 0): void => {
    const event = create(KeyEventSchema, { cursor: String(nextEventId++), tenantId, keyId, type, dekVersion });
    history.push(event);
    for (const subscriber of subscribers) subscriber.push(event);
  };

  const transport = createRouterTransport((router) => {
    router.service(DataKeyService, {
      async generateDataKey(req) {
        calls.generateDataKey++;
        takeFailure("generateDataKey");
        const key = keyOf(req.tenantId, req.keyId);
        return { plaintext: Buffer.from(key.versions[key.primary - 1] as Buffer), reference: reference(req.tenantId, req.keyId, key, key.primary), dekVersion: key.primary };
      },
      async decrypt(req) {
        calls.decrypt++;
        if (hold !== undefined) await hold;
        takeFailure("decrypt");
        const ref = Buffer.from(req.reference);
        const tenantLength = ref[21] ?? 0;
        const tenantId = ref.subarray(22, 22 + tenantLength).toString();
        const keyId = ref.subarray(23 + tenantLength, 23 + tenantLength + (ref[22 + tenantLength] ?? 0)).toString();
        if (ref[0] !== 1 || ref.length < 40) throw refusal(Code.InvalidArgument, ErrorReason.REFERENCE_MALFORMED, "malformed reference");
        if (tenantId !== req.tenantId || keyId !== req.keyId) throw refusal(Code.InvalidArgument, ErrorReason.REFERENCE_KEY_MISMATCH, "the reference names another key");
        const key = keyOf(req.tenantId, req.keyId);
        const version = ref.readUInt32BE(17);
        const dek = key.versions[version - 1];
        if (dek === undefined) throw refusal(Code.NotFound, ErrorReason.DEK_VERSION_NOT_FOUND, "no such version");
        if (key.revokedVersions.has(version)) throw refusal(Code.FailedPrecondition, ErrorReason.DEK_VERSION_REVOKED, "version revoked");
        return { plaintext: Buffer.from(dek), dekVersion: version };
      },
    });
    router.service(KeyEventService, {
      async *watchKeyEvents(req, ctx) {
        calls.watchKeyEvents++;
        if (refuseStreams) throw refusal(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "streams refused");
        const queue: KeyEvent[] = [];
        let failure: ConnectError | undefined;
        let wake: (() => void) | undefined;
        const matches = (event: KeyEvent): boolean => req.tenantId === "-" || event.tenantId === req.tenantId;
        if (req.afterCursor !== "") {
          const after = Number(req.afterCursor);
          if (after + 1 < historyStart) throw refusal(Code.OutOfRange, ErrorReason.EVENT_CURSOR_EXPIRED, "cursor expired");
          queue.push(...history.filter((event) => Number(event.cursor) > after && matches(event)));
        }
        const subscriber = {
          push(event: KeyEvent) {
            if (!matches(event)) return;
            queue.push(event);
            wake?.();
          },
          fail(error: ConnectError) {
            failure = error;
            wake?.();
          },
        };
        subscribers.add(subscriber);
        try {
          for (;;) {
            while (queue.length > 0) yield { event: queue.shift() as KeyEvent };
            if (failure !== undefined) throw failure;
            if (ctx.signal.aborted) return;
            await new Promise<void>((resolve) => {
              wake = resolve;
              ctx.signal.addEventListener("abort", () => resolve(), { once: true });
            });
            wake = undefined;
          }
        } finally {
          subscribers.delete(subscriber);
        }
      },
    });
    router.service(DatasetService, {
      async reportInventory(req) {
        calls.reportInventory++;
        reports.push({ tenantId: req.tenantId, keyId: req.keyId, datasetId: req.datasetId, counts: req.counts });
        return {};
      },
      async registerDataset() {
        return {};
      },
    });
  });

  return {
    transport,
    calls,
    reports,
    createKey(tenantId, keyId) {
      keys.set(`${tenantId}/${keyId}`, { uid: randomBytes(16), versions: [randomBytes(32)], primary: 1, state: "enabled", revokedVersions: new Set() });
      emit(tenantId, keyId, KeyEventType.KEY_CREATED);
    },
    rotate(tenantId, keyId) {
      const key = keyOf(tenantId, keyId);
      key.versions.push(randomBytes(32));
      key.primary = key.versions.length;
      emit(tenantId, keyId, KeyEventType.DEK_ROTATED, key.primary);
      return key.primary;
    },
    revoke(tenantId, keyId) {
      keyOf(tenantId, keyId).state = "revoked";
      emit(tenantId, keyId, KeyEventType.KEY_REVOKED);
    },
    revokeVersion(tenantId, keyId, version) {
      keyOf(tenantId, keyId).revokedVersions.add(version);
      emit(tenantId, keyId, KeyEventType.DEK_VERSION_REVOKED, version);
    },
    dekOf(tenantId, keyId, version) {
      return Buffer.from(keyOf(tenantId, keyId).versions[version - 1] as Buffer);
    },
    breakStreams(refuse = false) {
      refuseStreams = refuse;
      for (const subscriber of [...subscribers]) subscriber.fail(refusal(Code.Unavailable, ErrorReason.SHUTTING_DOWN, "stream broken"));
    },
    restoreStreams() {
      refuseStreams = false;
    },
    pruneHistory() {
      historyStart = nextEventId;
      history.length = 0;
    },
    failNext(method, n, error) {
      failures.push({ method, n, error });
    },
    holdDecrypts() {
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      return {
        release() {
          hold = undefined;
          release();
        },
      };
    },
    openStreams: () => subscribers.size,
  };
}
