import { readFileSync } from "node:fs";

/** PEM material: its text or bytes, or the file that holds it. */
export type PemSource = string | Uint8Array | { readonly path: string };

/** A client identity for mutual TLS, and the CA the server's certificate must chain to. */
export interface MutualTlsOptions {
  readonly ca: PemSource;
  readonly cert: PemSource;
  readonly key: PemSource;
  /** The name to check the server's certificate against, when it differs from the URL's host. */
  readonly serverName?: string;
}

/** Reads PEM material (files are read now, once). */
export function readPem(source: PemSource): Buffer {
  if (typeof source === "string") return Buffer.from(source, "utf8");
  if (source instanceof Uint8Array) return Buffer.from(source);
  return readFileSync(source.path);
}

/** Node TLS options for a client with a certificate. */
export function mutualTlsNodeOptions(tls: MutualTlsOptions): { ca: Buffer; cert: Buffer; key: Buffer; servername?: string } {
  return {
    ca: readPem(tls.ca),
    cert: readPem(tls.cert),
    key: readPem(tls.key),
    ...(tls.serverName === undefined ? {} : { servername: tls.serverName }),
  };
}
