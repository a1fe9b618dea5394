/**
 * KeyManagementService over Connect (gRPC, gRPC-Web, Connect) and, through the
 * REST transcoder, over REST: the same implementation for every protocol.
 * Each method authenticates the caller, checks the tenant, then calls the
 * transport-free operation in service/.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CreateKeyResponseSchema,
  GetEncryptionStatusResponseSchema,
  GetKeyResponseSchema,
  KeyManagementService,
  ListKeysResponseSchema,
  RestoreKeyResponseSchema,
  RevokeDekVersionResponseSchema,
  RevokeKeyResponseSchema,
  RotateKeyResponseSchema,
  UpdateKeyResponseSchema,
} from "../../../../gen/matih/kms/v1/key_management_service_pb.js";
import { createKey } from "../../service/create-key.js";
import { getEncryptionStatus } from "../../service/encryption-status.js";
import { getKey } from "../../service/get-key.js";
import type { KmsContext } from "../../service/kms-context.js";
import { listKeys } from "../../service/list-keys.js";
import { revokeKey } from "../../service/revoke-key.js";
import { rotateKey } from "../../service/rotate-key.js";
import { restoreKey } from "../../service/restore-key.js";
import { revokeDekVersion } from "../../service/revoke-dek-version.js";
import { updateKey } from "../../service/update-key.js";
import { guardTenantCall } from "./tenant-call.js";
import { customerKeyFromProto, lifecyclePolicyFromProto, kekAlgorithmFromProto, keyStateFilterFromProto, keyStatusToProto, keyToProto, rotationPolicyFromProto } from "./proto-mapping.js";

export function createKeyManagementService(context: KmsContext): Partial<ServiceImpl<typeof KeyManagementService>> {
  return {
    listKeys: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const page = await listKeys(context, {
          tenantId: req.tenantId,
          pageSize: req.pageSize,
          pageToken: req.pageToken,
          state: keyStateFilterFromProto(req.state),
        });
        return create(ListKeysResponseSchema, { keys: page.keys.map(keyToProto), nextPageToken: page.nextPageToken });
      }),

    createKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await createKey(context, {
          tenantId: req.tenantId,
          keyId: req.keyId,
          kekAlgorithm: kekAlgorithmFromProto(req.kekAlgorithm),
          rotationPolicy: rotationPolicyFromProto(req.rotationPolicy),
          description: req.description,
          lifecyclePolicy: lifecyclePolicyFromProto(req.lifecyclePolicy),
          customerKey: customerKeyFromProto(req.customerKey),
        });
        return create(CreateKeyResponseSchema, { key: keyToProto(key) });
      }),

    getKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await getKey(context, { tenantId: req.tenantId, keyId: req.keyId });
        return create(GetKeyResponseSchema, { key: keyToProto(key) });
      }),

    rotateKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await rotateKey(context, { tenantId: req.tenantId, keyId: req.keyId, rotateKek: req.rotateKek });
        return create(RotateKeyResponseSchema, { key: keyToProto(key) });
      }),

    revokeKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await revokeKey(context, { tenantId: req.tenantId, keyId: req.keyId });
        return create(RevokeKeyResponseSchema, { key: keyToProto(key) });
      }),

    updateKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await updateKey(context, {
          tenantId: req.tenantId,
          keyId: req.keyId,
          updateMask: req.updateMask?.paths ?? [],
          description: req.description,
          rotationPolicy: rotationPolicyFromProto(req.rotationPolicy),
          lifecyclePolicy: lifecyclePolicyFromProto(req.lifecyclePolicy),
          customerKey: req.updateMask?.paths.includes("customer_key") === true ? customerKeyFromProto(req.customerKey) : undefined,
        });
        return create(UpdateKeyResponseSchema, { key: keyToProto(key) });
      }),

    restoreKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await restoreKey(context, { tenantId: req.tenantId, keyId: req.keyId });
        return create(RestoreKeyResponseSchema, { key: keyToProto(key) });
      }),

    revokeDekVersion: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const key = await revokeDekVersion(context, { tenantId: req.tenantId, keyId: req.keyId, dekVersion: req.dekVersion });
        return create(RevokeDekVersionResponseSchema, { key: keyToProto(key) });
      }),

    getEncryptionStatus: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const report = await getEncryptionStatus(context, { tenantId: req.tenantId });
        return create(GetEncryptionStatusResponseSchema, {
          tenantId: report.tenantId,
          keys: report.keys.map(keyStatusToProto),
          reportTime: timestampFromDate(report.reportTime),
        });
      }),
  };
}
