export { createKmsConnectTransport, createKmsGrpcTransport, type KmsRpcTransportOptions } from "./grpc-transport.js";
export { createKmsRestTransport, restRequestFor, type KmsRestTransportOptions, type RestRequest } from "./rest-transport.js";
export { readPem, type MutualTlsOptions, type PemSource } from "./tls-material.js";
