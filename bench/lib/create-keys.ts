/**
 * Creates keys through the API (KeyManagementService/CreateKey over gRPC with
 * mTLS, the plain grpc-js client), a few calls in flight. Used for the small
 * key set and for the template the bulk seeder clones.
 */
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import { keyIdFor, tenantIdFor } from "../seed/key-names.js";
import { readPki } from "./pki.js";
import { loadKeyManagementServiceDefinition } from "./protos.js";

export interface CreatedKeys {
  readonly keys: ReadonlyArray<{ readonly tenantId: string; readonly keyId: string }>;
  readonly ms: number;
}

export async function createKeysThroughApi(options: {
  port: number;
  tlsDir: string;
  count: number;
  tenants: number;
  concurrency: number;
}): Promise<CreatedKeys> {
  const pki = await readPki(options.tlsDir);
  const definition = loadKeyManagementServiceDefinition();
  const createKey = definition["CreateKey"];
  if (createKey === undefined) throw new Error("KeyManagementService has no CreateKey");
  const client = new grpc.Client(`127.0.0.1:${options.port}`, grpc.credentials.createSsl(pki.ca, pki.clientKey, pki.clientCert), {
    "grpc.ssl_target_name_override": "localhost",
  });
  const started = performance.now();
  const keys: Array<{ tenantId: string; keyId: string }> = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < options.count) {
      const index = next++;
      const request = { tenantId: tenantIdFor(index, options.tenants), keyId: keyIdFor(index) };
      await new Promise<void>((resolve, reject) =>
        client.makeUnaryRequest(
          createKey.path,
          createKey.requestSerialize as (value: object) => Buffer,
          createKey.responseDeserialize as (bytes: Buffer) => unknown,
          request,
          (error: grpc.ServiceError | null) => (error ? reject(new Error(`CreateKey ${request.tenantId}/${request.keyId}: ${error.message}`)) : resolve()),
        ),
      );
      keys.push(request);
    }
  };
  try {
    await Promise.all(Array.from({ length: options.concurrency }, worker));
  } finally {
    client.close();
  }
  return { keys, ms: performance.now() - started };
}
