/**
 * The API's .proto files loaded with @grpc/proto-loader, as a plain gRPC
 * client or server written by another team would load them.
 */
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = fileURLToPath(new URL("../../", import.meta.url));

function loadService(file: string, name: string): grpc.ServiceDefinition {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [`${root}proto`, `${root}node_modules/google-proto-files`],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    matih: { kms: { v1: Record<string, grpc.ServiceClientConstructor | undefined> } };
  };
  const service = pkg.matih.kms.v1[name];
  if (service === undefined) throw new Error(`${file} defines no service ${name}`);
  return service.service;
}

export function loadDataKeyServiceDefinition(): grpc.ServiceDefinition {
  return loadService("matih/kms/v1/data_key_service.proto", "DataKeyService");
}

export function loadKeyManagementServiceDefinition(): grpc.ServiceDefinition {
  return loadService("matih/kms/v1/key_management_service.proto", "KeyManagementService");
}
