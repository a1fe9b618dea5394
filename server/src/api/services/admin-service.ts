/**
 * AdminService: the root of trust, for the privileged service identities of
 * KMS_ADMIN_SPIFFE_IDS only (a tenant token never qualifies). Over gRPC and,
 * through the transcoder, REST (`GET /api/v1/admin/root-key`,
 * `POST /api/v1/admin/root-key:rotate`, `POST /api/v1/admin/root-key:switch-provider`).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  AdminService,
  GetRootKeyStatusResponseSchema,
  PreviousRootProviderSchema,
  RootKeyStatusSchema,
  RootRewrapProgressSchema,
  RotateRootKeyResponseSchema,
  SwitchRootProviderResponseSchema,
  type RootKeyStatus,
} from "../../../../gen/matih/kms/v1/admin_service_pb.js";
import type { KmsContext } from "../../service/kms-context.js";
import { rotateRootKey } from "../../service/root-key-rotation.js";
import { switchRootProvider } from "../../service/root-provider-switch.js";
import { getRootKeyStatus, type RootKeyStatusReport } from "../../service/root-key-status.js";
import { authorizeAdmin } from "../admin-access.js";
import { authenticate } from "../authentication.js";

export interface AdminServiceOptions {
  readonly adminSpiffeIds: readonly string[];
  /** KMS_ROOT_KEY_ROTATION_DAYS: the status's next rotation time (0: none scheduled). */
  readonly rootKeyRotationDays: number;
  /** Called after a rotation or a switch of root provider enqueued its re-wrap, e.g. to wake the background workers. */
  readonly onRotated?: () => void;
}

export function createAdminService(context: KmsContext, options: AdminServiceOptions): Partial<ServiceImpl<typeof AdminService>> {
  const guard = async (ctx: HandlerContext): Promise<void> => authorizeAdmin(await authenticate(ctx), options.adminSpiffeIds);
  const status = async (): Promise<RootKeyStatus> =>
    rootKeyStatusToProto(await getRootKeyStatus(context, { rotationDays: options.rootKeyRotationDays }));
  return {
    async getRootKeyStatus(_req, ctx) {
      await guard(ctx);
      return create(GetRootKeyStatusResponseSchema, { status: await status() });
    },
    async rotateRootKey(_req, ctx) {
      await guard(ctx);
      await rotateRootKey(context);
      options.onRotated?.();
      return create(RotateRootKeyResponseSchema, { status: await status() });
    },
    async switchRootProvider(req, ctx) {
      await guard(ctx);
      await switchRootProvider(context, { provider: req.provider, keyId: req.keyId });
      options.onRotated?.();
      return create(SwitchRootProviderResponseSchema, { status: await status() });
    },
  };
}

function rootKeyStatusToProto(report: RootKeyStatusReport): RootKeyStatus {
  return create(RootKeyStatusSchema, {
    provider: report.provider,
    currentKeyId: report.currentKeyId,
    currentKeyCreateTime: timestampFromDate(report.currentKeyCreateTime),
    ...(report.nextRotationTime === undefined ? {} : { nextRotationTime: timestampFromDate(report.nextRotationTime) }),
    keksPendingRewrap: BigInt(report.keksPendingRewrap),
    keksTotal: BigInt(report.keksTotal),
    configuredProvider: report.configured.provider,
    configuredKeyId: report.configured.keyId,
    ...(report.rewrap === undefined
      ? {}
      : {
          rewrap: create(RootRewrapProgressSchema, {
            jobId: BigInt(report.rewrap.jobId),
            done: BigInt(report.rewrap.done),
            total: BigInt(report.rewrap.total),
            lastError: report.rewrap.lastError ?? "",
          }),
        }),
    ...(report.previous === undefined
      ? {}
      : {
          previousProvider: create(PreviousRootProviderSchema, {
            provider: report.previous.provider,
            keksWrapped: BigInt(report.previous.keks),
            removable: report.previous.removable,
          }),
        }),
  });
}
