import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** The development PKI files the KMS writes to `<dataDir>/tls/` (and the no-op servers reuse). */
export interface PkiFiles {
  readonly ca: Buffer;
  readonly serverCert: Buffer;
  readonly serverKey: Buffer;
  readonly clientCert: Buffer;
  readonly clientKey: Buffer;
}

export async function readPki(tlsDir: string): Promise<PkiFiles> {
  const [ca, serverCert, serverKey, clientCert, clientKey] = await Promise.all(
    ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem"].map((name) => readFile(join(tlsDir, name))),
  );
  return { ca: ca!, serverCert: serverCert!, serverKey: serverKey!, clientCert: clientCert!, clientKey: clientKey! };
}
