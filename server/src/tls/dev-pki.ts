import "./reflect-metadata-shim.js";
import { createPrivateKey, randomBytes, webcrypto, X509Certificate as NodeX509Certificate } from "node:crypto";
import { chmod, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";

/**
 * Development PKI: a CA, a server certificate for localhost and a client
 * certificate with the SPIFFE id `spiffe://matih.local/dev`, all ECDSA P-256.
 * Created on first start under `<data dir>/tls/`, reused afterwards; a leaf
 * that expired (or expires within a week) is re-issued from the same CA, and
 * an expired or missing CA regenerates everything. Private keys are written
 * with mode 0600. Never for production: there, certificates come from files
 * that cert-manager renews.
 */

export const DEV_CLIENT_SPIFFE_ID = "spiffe://matih.local/dev";

export interface PkiPaths {
  readonly dir: string;
  readonly caCertPath: string;
  readonly caKeyPath: string;
  readonly serverCertPath: string;
  readonly serverKeyPath: string;
  readonly clientCertPath: string;
  readonly clientKeyPath: string;
}

export interface PkiPems {
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** A certificate with its private key, both PEM. */
export interface CertificateAndKey {
  readonly cert: string;
  readonly key: string;
}

/** A CA able to issue certificates: its certificate and private key (PEM). */
export type CertificateAuthority = CertificateAndKey;

export const PKI_FILE_NAMES = {
  caCert: "ca.pem",
  caKey: "ca-key.pem",
  serverCert: "server.pem",
  serverKey: "server-key.pem",
  clientCert: "client.pem",
  clientKey: "client-key.pem",
} as const;

const DAY_MS = 24 * 60 * 60 * 1000;
const CA_VALIDITY_DAYS = 3650;
const LEAF_VALIDITY_DAYS = 365;
const RENEW_BEFORE_MS = 7 * DAY_MS;

const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;

let providerReady = false;
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

function webCrypto(): webcrypto.Crypto {
  const crypto = webcrypto;
  if (!providerReady) {
    x509.cryptoProvider.set(crypto);
    providerReady = true;
  }
  return crypto;
}

function pkiPaths(dir: string): PkiPaths {
  return {
    dir,
    caCertPath: join(dir, PKI_FILE_NAMES.caCert),
    caKeyPath: join(dir, PKI_FILE_NAMES.caKey),
    serverCertPath: join(dir, PKI_FILE_NAMES.serverCert),
    serverKeyPath: join(dir, PKI_FILE_NAMES.serverKey),
    clientCertPath: join(dir, PKI_FILE_NAMES.clientCert),
    clientKeyPath: join(dir, PKI_FILE_NAMES.clientKey),
  };
}

/**
 * Creates the development PKI in `dir` on first call and reuses it after
 * (re-issuing what is missing or about to expire). Returns paths and PEMs.
 */
export async function ensureDevelopmentPki(dir: string, options: { readonly now?: Date } = {}): Promise<PkiPaths & PkiPems> {
  const now = options.now ?? new Date();
  const paths = pkiPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let ca = await readPair(paths.caCertPath, paths.caKeyPath);
  let caFresh = false;
  if (ca === undefined || !usableAt(ca.cert, now, 0)) {
    ca = await createCertificateAuthority({ notBefore: new Date(now.getTime() - 60_000) });
    await writePair(paths.caCertPath, paths.caKeyPath, ca);
    caFresh = true;
  }

  let server = caFresh ? undefined : await readPair(paths.serverCertPath, paths.serverKeyPath);
  if (server === undefined || !usableAt(server.cert, now, RENEW_BEFORE_MS) || !issuedBy(server.cert, ca.cert)) {
    server = await issueServerCertificate(ca, { notBefore: new Date(now.getTime() - 60_000) });
    await writePair(paths.serverCertPath, paths.serverKeyPath, server);
  }

  let client = caFresh ? undefined : await readPair(paths.clientCertPath, paths.clientKeyPath);
  if (client === undefined || !usableAt(client.cert, now, RENEW_BEFORE_MS) || !issuedBy(client.cert, ca.cert)) {
    client = await issueClientCertificate(ca, { notBefore: new Date(now.getTime() - 60_000) });
    await writePair(paths.clientCertPath, paths.clientKeyPath, client);
  }

  return {
    ...paths,
    caCert: ca.cert,
    caKey: ca.key,
    serverCert: server.cert,
    serverKey: server.key,
    clientCert: client.cert,
    clientKey: client.key,
  };
}

async function readPair(certPath: string, keyPath: string): Promise<CertificateAndKey | undefined> {
  try {
    const [cert, key] = await Promise.all([readFile(certPath, "utf8"), readFile(keyPath, "utf8")]);
    new NodeX509Certificate(cert);
    createPrivateKey(key);
    const keyMode = (await stat(keyPath)).mode & 0o777;
    if ((keyMode & 0o077) !== 0) await chmod(keyPath, 0o600);
    return { cert, key };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    // Unreadable or corrupt: issue a new one rather than refuse to start in development.
    return undefined;
  }
}

async function writePair(certPath: string, keyPath: string, pair: CertificateAndKey): Promise<void> {
  await writeAtomically(keyPath, pair.key, 0o600);
  await writeAtomically(certPath, pair.cert, 0o644);
}

async function writeAtomically(path: string, content: string, mode: number): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  await writeFile(temporary, content, { mode, flag: "wx" });
  await chmod(temporary, mode);
  await rename(temporary, path);
}

function usableAt(certPem: string, now: Date, margin: number): boolean {
  const cert = new NodeX509Certificate(certPem);
  return new Date(cert.validFrom).getTime() <= now.getTime() + 60_000 && new Date(cert.validTo).getTime() - margin > now.getTime();
}

function issuedBy(certPem: string, caPem: string): boolean {
  try {
    return new NodeX509Certificate(certPem).checkIssued(new NodeX509Certificate(caPem)) &&
      new NodeX509Certificate(certPem).verify(new NodeX509Certificate(caPem).publicKey);
  } catch {
    return false;
  }
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return webCrypto().subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webCrypto().subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

async function importCaKey(pem: string): Promise<CryptoKey> {
  const keyObject = createPrivateKey(pem);
  const curve = keyObject.asymmetricKeyDetails?.namedCurve;
  if (keyObject.asymmetricKeyType !== "ec" || (curve !== "prime256v1" && curve !== "P-256")) {
    throw new Error("the development CA key must be an ECDSA P-256 key");
  }
  const der = keyObject.export({ type: "pkcs8", format: "der" });
  return webCrypto().subtle.importKey("pkcs8", der, KEY_ALGORITHM, false, ["sign"]);
}

function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive
  bytes[0] = (bytes[0] ?? 0) | 0x01; // no leading zero byte
  return bytes.toString("hex");
}

function validity(options: { readonly notBefore?: Date; readonly notAfter?: Date }, days: number): { notBefore: Date; notAfter: Date } {
  const notBefore = options.notBefore ?? new Date(Date.now() - 60_000);
  const notAfter = options.notAfter ?? new Date(notBefore.getTime() + days * DAY_MS);
  return { notBefore, notAfter };
}

export interface CertificateAuthorityOptions {
  readonly commonName?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/** A new self-signed CA (ECDSA P-256, path length 0). */
export async function createCertificateAuthority(options: CertificateAuthorityOptions = {}): Promise<CertificateAuthority> {
  const crypto = webCrypto();
  const keys = await generateKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: `CN=${options.commonName ?? "matih-kms development CA"}, O=MATIH`,
      ...validity(options, CA_VALIDITY_DAYS),
      keys,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { cert: cert.toString("pem"), key: await privateKeyPem(keys.privateKey) };
}

interface LeafOptions {
  readonly commonName: string;
  readonly sans: x509.JsonGeneralNames;
  readonly usage: x509.ExtendedKeyUsage;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

async function issueLeaf(ca: CertificateAuthority, options: LeafOptions): Promise<CertificateAndKey> {
  const crypto = webCrypto();
  const caCert = new x509.X509Certificate(ca.cert);
  const caKey = await importCaKey(ca.key);
  const keys = await generateKeys();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([options.usage], false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, crypto),
  ];
  if (options.sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(options.sans, false));
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: `CN=${options.commonName}, O=MATIH`,
      issuer: caCert.subjectName,
      ...validity(options, LEAF_VALIDITY_DAYS),
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions,
    },
    crypto,
  );
  return { cert: cert.toString("pem"), key: await privateKeyPem(keys.privateKey) };
}

export interface ServerCertificateOptions {
  /** Default ["localhost"]. */
  readonly dnsNames?: readonly string[];
  /** Default ["127.0.0.1", "::1"]. */
  readonly ipAddresses?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/** A serverAuth certificate for localhost (DNS localhost, IP 127.0.0.1 and ::1 by default). */
export async function issueServerCertificate(ca: CertificateAuthority, options: ServerCertificateOptions = {}): Promise<CertificateAndKey> {
  const dnsNames = options.dnsNames ?? ["localhost"];
  const ipAddresses = options.ipAddresses ?? ["127.0.0.1", "::1"];
  return issueLeaf(ca, {
    commonName: dnsNames[0] ?? "matih-kms",
    sans: [...dnsNames.map((value) => ({ type: "dns" as const, value })), ...ipAddresses.map((value) => ({ type: "ip" as const, value }))],
    usage: x509.ExtendedKeyUsage.serverAuth,
    ...(options.notBefore === undefined ? {} : { notBefore: options.notBefore }),
    ...(options.notAfter === undefined ? {} : { notAfter: options.notAfter }),
  });
}

export interface ClientCertificateOptions {
  /** The URI SAN. Default `spiffe://matih.local/dev`; null issues a certificate without one. */
  readonly spiffeId?: string | null;
  /** Default: the SPIFFE id's last path segment, or "client". */
  readonly commonName?: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/** A clientAuth certificate carrying a SPIFFE id as its URI SAN, issued by `ca`. */
export async function issueClientCertificate(ca: CertificateAuthority, options: ClientCertificateOptions = {}): Promise<CertificateAndKey> {
  const spiffeId = options.spiffeId === undefined ? DEV_CLIENT_SPIFFE_ID : options.spiffeId;
  return issueLeaf(ca, {
    commonName: options.commonName ?? (spiffeId?.split("/").pop() || "client"),
    sans: spiffeId === null ? [] : [{ type: "url", value: spiffeId }],
    usage: x509.ExtendedKeyUsage.clientAuth,
    ...(options.notBefore === undefined ? {} : { notBefore: options.notBefore }),
    ...(options.notAfter === undefined ? {} : { notAfter: options.notAfter }),
  });
}

export interface SelfSignedCertificateOptions {
  /** URI SAN; default `spiffe://matih.local/dev` (a forgery of the dev identity). null: none. */
  readonly spiffeId?: string | null;
  readonly commonName?: string;
  readonly dnsNames?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/**
 * A self-signed leaf (client and server auth) — for tests: it carries a
 * SPIFFE id that looks right but chains to no configured CA.
 */
export async function createSelfSignedCertificate(options: SelfSignedCertificateOptions = {}): Promise<CertificateAndKey> {
  const crypto = webCrypto();
  const keys = await generateKeys();
  const spiffeId = options.spiffeId === undefined ? DEV_CLIENT_SPIFFE_ID : options.spiffeId;
  const sans: x509.JsonGeneralNames = [
    ...(spiffeId === null ? [] : [{ type: "url" as const, value: spiffeId }]),
    ...(options.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth], false),
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans, false));
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: `CN=${options.commonName ?? "self-signed"}, O=MATIH`,
      ...validity(options, LEAF_VALIDITY_DAYS),
      keys,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions,
    },
    crypto,
  );
  return { cert: cert.toString("pem"), key: await privateKeyPem(keys.privateKey) };
}
