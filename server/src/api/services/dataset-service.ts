/**
 * DatasetService over Connect and, through the REST transcoder, REST: the
 * re-encryption inventory under a key (register, list, report).
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  DatasetService,
  ListDatasetsResponseSchema,
  RegisterDatasetResponseSchema,
  ReportInventoryResponseSchema,
} from "../../../../gen/matih/kms/v1/dataset_service_pb.js";
import type { KmsContext } from "../../service/kms-context.js";
import { listDatasets } from "../../service/list-datasets.js";
import { registerDataset } from "../../service/register-dataset.js";
import { reportInventory } from "../../service/report-inventory.js";
import { datasetToProto, storeKindFromProto } from "./proto-mapping.js";
import { guardTenantCall } from "./tenant-call.js";

export function createDatasetService(context: KmsContext): ServiceImpl<typeof DatasetService> {
  return {
    registerDataset: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const dataset = await registerDataset(context, {
          tenantId: req.tenantId,
          keyId: req.keyId,
          datasetId: req.datasetId,
          storeKind: storeKindFromProto(req.storeKind),
          description: req.description,
        });
        return create(RegisterDatasetResponseSchema, { dataset: datasetToProto(dataset) });
      }),

    listDatasets: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const datasets = await listDatasets(context, { tenantId: req.tenantId, keyId: req.keyId });
        return create(ListDatasetsResponseSchema, { datasets: datasets.map(datasetToProto) });
      }),

    reportInventory: (req, ctx) =>
      guardTenantCall(ctx, req.tenantId, async () => {
        const dataset = await reportInventory(context, {
          tenantId: req.tenantId,
          keyId: req.keyId,
          datasetId: req.datasetId,
          counts: req.counts.map((count) => ({ dekVersion: count.dekVersion, ciphertexts: count.ciphertexts })),
        });
        return create(ReportInventoryResponseSchema, { dataset: datasetToProto(dataset) });
      }),
  };
}
