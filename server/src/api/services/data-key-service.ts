/** DataKeyService: the hot path. The same implementation serves gRPC, Connect and REST. */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { DataKeyService, DecryptResponseSchema, GenerateDataKeyResponseSchema } from "../../../../gen/matih/kms/v1/data_key_service_pb.js";
import { decryptDataKey } from "../../service/decrypt-data-key.js";
import { generateDataKey } from "../../service/generate-data-key.js";
import type { KmsContext } from "../../service/kms-context.js";
import { guardTenantCall } from "./tenant-call.js";

export function createDataKeyService(context: KmsContext): ServiceImpl<typeof DataKeyService> {
  return {
    generateDataKey: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const dek = await generateDataKey(context, { tenantId: req.tenantId, keyId: req.keyId });
        return create(GenerateDataKeyResponseSchema, { plaintext: dek.plaintext, reference: dek.reference, dekVersion: dek.dekVersion });
      }),

    decrypt: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const dek = await decryptDataKey(context, { tenantId: req.tenantId, keyId: req.keyId, reference: req.reference });
        return create(DecryptResponseSchema, { plaintext: dek.plaintext, dekVersion: dek.dekVersion });
      }),
  };
}
