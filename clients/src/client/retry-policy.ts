import type { DescMethod } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { ErrorReason } from "../gen.js";
import type { KmsError } from "../errors/kms-error.js";

export interface RetryOptions {
  /** Attempts in all, the first included. Default 4; 1 disables retries. */
  readonly maxAttempts?: number;
  /** The backoff before the second attempt, doubled for each one after, up to `maxBackoffMs`. Defaults 50 / 2,000 ms. */
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  /** The codes worth another attempt. Default Unavailable and Aborted. */
  readonly retryableCodes?: readonly Code[];
  /** [0, 1): the jitter source. Default Math.random. */
  readonly random?: () => number;
}

export interface RetryPolicy {
  readonly maxAttempts: number;
  /** True when `error` from `method` may be retried: a retryable code, and a call safe to repeat. */
  shouldRetry(method: DescMethod, error: KmsError): boolean;
  /** The pause before attempt `attempt + 1`: full jitter over an exponential ceiling. */
  backoffMs(attempt: number): number;
}

/**
 * Calls that may run twice without harm. A GET route, a declared
 * idempotency level, or one of these: GenerateDataKey returns the current
 * primary, Decrypt has no effect, ReportInventory replaces the dataset's
 * counts. CreateKey, RotateKey, RevokeKey and the like are not repeated
 * after a failure that may have reached the server.
 */
const IDEMPOTENT = new Set([
  "matih.kms.v1.DataKeyService.GenerateDataKey",
  "matih.kms.v1.DataKeyService.Decrypt",
  "matih.kms.v1.DatasetService.ReportInventory",
  "matih.kms.v1.DatasetService.ListDatasets",
  "matih.kms.v1.KeyManagementService.GetKey",
  "matih.kms.v1.KeyManagementService.ListKeys",
  "matih.kms.v1.KeyManagementService.GetEncryptionStatus",
]);

export function isIdempotent(method: DescMethod): boolean {
  return (
    IDEMPOTENT.has(`${method.parent.typeName}.${method.name}`) ||
    method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ||
    method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT
  );
}

export function createRetryPolicy(options: RetryOptions | false = {}): RetryPolicy {
  if (options === false) return { maxAttempts: 1, shouldRetry: () => false, backoffMs: () => 0 };
  const maxAttempts = options.maxAttempts ?? 4;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new RangeError("maxAttempts must be a positive integer");
  const initial = options.initialBackoffMs ?? 50;
  const max = options.maxBackoffMs ?? 2_000;
  const codes = new Set(options.retryableCodes ?? [Code.Unavailable, Code.Aborted]);
  const random = options.random ?? Math.random;
  return {
    maxAttempts,
    shouldRetry(method, error) {
      if (!codes.has(error.code)) return false;
      // The server refuses new calls while it drains, before doing anything:
      // any call may go again (to another replica).
      if (error.reason === ErrorReason.SHUTTING_DOWN) return true;
      return isIdempotent(method);
    },
    backoffMs(attempt) {
      return random() * Math.min(max, initial * 2 ** Math.min(attempt - 1, 30));
    },
  };
}
