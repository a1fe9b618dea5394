/** DataKeyService: the hot path. The same implementation serves gRPC, Connect and REST. */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DataKeyService, DecryptResponseSchema, GenerateDataKeyResponseSchema } from "../../../../gen/matih/kms/v1/data_key_service_pb.js";
import { thenApply } from "../../service/awaitable.js";
import { type DecryptedDataKey, serveDecrypt } from "../../service/decrypt-data-key.js";
import { type GeneratedDataKey, serveGenerateDataKey } from "../../service/generate-data-key.js";
import type { KmsContext } from "../../service/kms-context.js";
import { guardTenantCall } from "./tenant-call.js";

/** Calls that memory serves are answered without an await (service/awaitable.ts). */
export function createDataKeyService(context: KmsContext): ServiceImpl<typeof DataKeyService> {
  return {
    generateDataKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, () => thenApply(serveGenerateDataKey(context, { tenantId: req.tenantId, keyId: req.keyId }), generateResponse)),

    decrypt: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, () =>
        thenApply(serveDecrypt(context, { tenantId: req.tenantId, keyId: req.keyId, reference: req.reference }), decryptResponse),
      ),
  };
}

function generateResponse(dek: GeneratedDataKey) {
  return create(GenerateDataKeyResponseSchema, { plaintext: dek.plaintext, reference: dek.reference, dekVersion: dek.dekVersion });
}

function decryptResponse(dek: DecryptedDataKey) {
  return create(DecryptResponseSchema, { plaintext: dek.plaintext, dekVersion: dek.dekVersion });
}
