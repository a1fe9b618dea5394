export { createKmsClient, createServiceClient, type KmsClient, type KmsClientOptions } from "./kms-client.js";
export { createRetryPolicy, isIdempotent, type RetryOptions, type RetryPolicy } from "./retry-policy.js";
export { KmsError, isKmsError, type ErrorReasonName } from "../errors/kms-error.js";
