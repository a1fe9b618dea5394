/**
 * @matih/kms-client: what internal services import instead of calling
 * matih-kms by hand.
 *
 *   const kms = createKmsClient({ transport: createKmsGrpcTransport({ baseUrl, tls }) });
 *   const envelope = createEnvelopeEncryption({ kms, cache: { maxAgeMs: 5 * 60_000 } });
 *   const ciphertext = await envelope.encrypt("acme", "pii", plaintext, { table: "customers" });
 *   const again = await envelope.decrypt(ciphertext, { table: "customers" }, { tenantId: "acme" });
 */
export * from "./transport/index.js";
export * from "./client/index.js";
export * from "./cache/index.js";
export * from "./envelope/index.js";
export * from "./reencrypt/index.js";
export { ErrorReason, KeyEventType, StoreKind } from "./gen.js";
