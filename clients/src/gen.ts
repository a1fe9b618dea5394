/**
 * The one place the client names the generated code. It is imported from the
 * repository's `gen/` (see docs/decisions/0010-client-uses-repository-gen.md),
 * so the client and the server always speak the same, CI-checked API.
 */
export { DataKeyService } from "../../gen/matih/kms/v1/data_key_service_pb.js";
export type { DecryptResponse, GenerateDataKeyResponse } from "../../gen/matih/kms/v1/data_key_service_pb.js";
export { KeyManagementService } from "../../gen/matih/kms/v1/key_management_service_pb.js";
export { KeyEventService } from "../../gen/matih/kms/v1/key_event_service_pb.js";
export type { WatchKeyEventsResponse } from "../../gen/matih/kms/v1/key_event_service_pb.js";
export { DatasetService } from "../../gen/matih/kms/v1/dataset_service_pb.js";
export { ErrorDetailSchema, ErrorReason } from "../../gen/matih/kms/v1/errors_pb.js";
export type { ErrorDetail } from "../../gen/matih/kms/v1/errors_pb.js";
export { KeyEventType, StoreKind } from "../../gen/matih/kms/v1/resources_pb.js";
export type { DekVersionCount, KeyEvent } from "../../gen/matih/kms/v1/resources_pb.js";
export { http as httpRuleOption } from "../../gen/google/api/annotations_pb.js";
