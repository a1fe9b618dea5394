/**
 * KeyEventService over Connect (gRPC, gRPC-Web, Connect) and, through the REST
 * transcoder, as newline-delimited JSON: a subscriber watches one tenant's key
 * events, or — tenant_id "-", privileged service identities only — every
 * tenant's, resuming after a cursor.
 *
 * The RPC guard checks the request's tenant for unary calls only (a streaming
 * request is not yet read when interceptors run), and errors thrown while a
 * stream is iterated bypass it, so this implementation does both itself.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { KeyEventService, WatchKeyEventsResponseSchema } from "../../../../gen/matih/kms/v1/key_event_service_pb.js";
import { KeyEventSchema, KeyEventType, type KeyEvent as ProtoKeyEvent } from "../../../../gen/matih/kms/v1/resources_pb.js";
import { requireValidId } from "../../domain/identifiers.js";
import type { KeyEvent, KeyEventType as DomainKeyEventType } from "../../domain/key-event.js";
import { encodeEventCursor } from "../../service/key-event-cursor.js";
import { createKeyEventFeed, type KeyEventFeed } from "../../service/key-event-feed.js";
import { watchKeyEvents } from "../../service/key-event-watch.js";
import type { KmsContext } from "../../service/kms-context.js";
import { authorizeAdmin } from "../admin-access.js";
import { authenticate, authorizeTenant } from "../authentication.js";
import { toConnectError } from "../error-mapping.js";
import { silentLogger, type Logger } from "../logger.js";
import { markStreamOpened } from "../stream-opened.js";

/** The tenant id that means "every tenant" (AIP-159). */
export const ALL_TENANTS = "-";

export interface KeyEventServiceOptions {
  /** Service identities allowed to watch every tenant (config.adminSpiffeIds). */
  readonly adminSpiffeIds: readonly string[];
  /** How often the process's one poller reads new events. Default 150 ms. */
  readonly pollIntervalMs?: number | undefined;
  /** Events per query. Default 500. */
  readonly batchSize?: number | undefined;
  readonly logger?: Logger | undefined;
}

export interface KeyEventServiceHandle {
  readonly impl: Partial<ServiceImpl<typeof KeyEventService>>;
  readonly feed: KeyEventFeed;
  /** Ends every open stream cleanly (server shutdown); later calls are refused SHUTTING_DOWN. */
  close(): void;
}

export function createKeyEventService(context: KmsContext, options: KeyEventServiceOptions): KeyEventServiceHandle {
  const log = options.logger ?? silentLogger;
  const feed = createKeyEventFeed(context.db, {
    pollIntervalMs: options.pollIntervalMs,
    batchSize: options.batchSize,
    onPollError: (err) => log.warn("key event poll failed; retrying", { err }),
  });
  const procedure = `${KeyEventService.typeName}/WatchKeyEvents`;

  async function* watch(tenantIdField: string, afterCursor: string, ctx: HandlerContext) {
    try {
      const caller = await authenticate(ctx);
      authorizeTenant(caller, tenantIdField); // a tenant caller: its own tenant only (never "-")
      let tenantId: string | undefined;
      if (tenantIdField === ALL_TENANTS) {
        authorizeAdmin(caller, options.adminSpiffeIds);
        tenantId = undefined;
      } else {
        tenantId = requireValidId("tenant_id", tenantIdField);
      }
      const events = watchKeyEvents(context, feed, { tenantId, afterCursor, onSubscribed: () => markStreamOpened(ctx) }, ctx.signal);
      for await (const event of events) {
        yield create(WatchKeyEventsResponseSchema, { event: keyEventToProto(event) });
      }
    } catch (err) {
      throw toConnectError(err, log, { procedure });
    }
  }

  return {
    impl: {
      watchKeyEvents: (req, ctx) => watch(req.tenantId, req.afterCursor, ctx),
    },
    feed,
    close: () => feed.close(),
  };
}

const EVENT_TYPES: { readonly [T in DomainKeyEventType]: KeyEventType } = {
  KEY_CREATED: KeyEventType.KEY_CREATED,
  DEK_ROTATED: KeyEventType.DEK_ROTATED,
  KEK_ROTATED: KeyEventType.KEK_ROTATED,
  KEY_REVOKED: KeyEventType.KEY_REVOKED,
  KEY_RESTORED: KeyEventType.KEY_RESTORED,
  KEY_DESTROYED: KeyEventType.KEY_DESTROYED,
  DEK_VERSION_REVOKED: KeyEventType.DEK_VERSION_REVOKED,
  DEK_VERSION_PURGED: KeyEventType.DEK_VERSION_PURGED,
  KEK_VERSION_DESTROYED: KeyEventType.KEK_VERSION_DESTROYED,
  CUSTOMER_KEY_UNAVAILABLE: KeyEventType.CUSTOMER_KEY_UNAVAILABLE,
  CUSTOMER_KEY_AVAILABLE: KeyEventType.CUSTOMER_KEY_AVAILABLE,
};

export function keyEventToProto(event: KeyEvent): ProtoKeyEvent {
  return create(KeyEventSchema, {
    cursor: encodeEventCursor(event.eventId),
    tenantId: event.tenantId,
    keyId: event.keyId,
    type: EVENT_TYPES[event.type] ?? KeyEventType.UNSPECIFIED,
    dekVersion: event.dekVersion ?? 0,
    kekVersion: event.kekVersion ?? 0,
    time: timestampFromDate(event.time),
  });
}
