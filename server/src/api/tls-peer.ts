import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";

/**
 * What the TLS handshake established about the client.
 *
 * The server runs with `requestCert: true, rejectUnauthorized: false`, so a
 * connection with an untrusted, expired or self-signed certificate still
 * completes; only `authorized === true` (the chain verified against the
 * configured CA, within its validity) makes the certificate count.
 */
export interface TlsPeer {
  /** A client certificate was presented (trusted or not). */
  readonly presented: boolean;
  /** The certificate chains to the configured CA and is currently valid. */
  readonly authorized: boolean;
  /** OpenSSL's verdict when not authorized, e.g. "CERT_HAS_EXPIRED". */
  readonly authorizationError: string | undefined;
  /**
   * The certificate's SPIFFE id (its one `spiffe://` URI SAN), set only when
   * the certificate is authorized and carries exactly one well-formed one.
   */
  readonly spiffeId: string | undefined;
  /** Why a trusted certificate yields no SPIFFE id, when it does not. */
  readonly spiffeIdProblem: string | undefined;
}

const NO_PEER: TlsPeer = {
  presented: false,
  authorized: false,
  authorizationError: undefined,
  spiffeId: undefined,
  spiffeIdProblem: undefined,
};

/** The certificate of a connection cannot change, so it is read once per socket. */
const peerCache = new WeakMap<object, TlsPeer>();

/**
 * The TLS socket a request arrived on: `req.stream.session.socket` under
 * HTTP/2, `req.socket` under HTTP/1.1.
 */
export function tlsSocketOf(req: IncomingMessage | Http2ServerRequest): TLSSocket | undefined {
  if ("stream" in req && req.stream !== undefined) {
    const socket = req.stream.session?.socket;
    return isTlsSocket(socket) ? socket : undefined;
  }
  const socket: Socket | undefined = req.socket;
  return isTlsSocket(socket) ? socket : undefined;
}

function isTlsSocket(socket: unknown): socket is TLSSocket {
  return typeof socket === "object" && socket !== null && typeof (socket as TLSSocket).getPeerX509Certificate === "function";
}

/** What the handshake on `socket` established (cached per socket). */
export function tlsPeerOf(socket: TLSSocket | undefined): TlsPeer {
  if (socket === undefined) return NO_PEER;
  const cached = peerCache.get(socket);
  if (cached !== undefined) return cached;
  const peer = readPeer(socket);
  peerCache.set(socket, peer);
  return peer;
}

function readPeer(socket: TLSSocket): TlsPeer {
  const certificate = socket.getPeerX509Certificate();
  if (certificate === undefined) return NO_PEER;
  if (socket.authorized !== true) {
    return {
      presented: true,
      authorized: false,
      authorizationError: describeAuthorizationError(socket.authorizationError),
      spiffeId: undefined,
      spiffeIdProblem: undefined,
    };
  }
  const uris = parseSubjectAltName(certificate.subjectAltName ?? "")
    .filter((name) => name.type === "URI")
    .map((name) => name.value);
  const spiffeUris = uris.filter((uri) => uri.toLowerCase().startsWith("spiffe://"));
  let spiffeId: string | undefined;
  let problem: string | undefined;
  if (spiffeUris.length === 0) problem = "the client certificate has no SPIFFE URI SAN (spiffe://...)";
  else if (spiffeUris.length > 1) problem = "the client certificate has more than one SPIFFE URI SAN";
  else if (!isSpiffeId(spiffeUris[0] ?? "")) problem = "the client certificate's SPIFFE URI SAN is not a well-formed SPIFFE id";
  else spiffeId = spiffeUris[0];
  return { presented: true, authorized: true, authorizationError: undefined, spiffeId, spiffeIdProblem: problem };
}

function describeAuthorizationError(error: unknown): string {
  if (error === undefined || error === null) return "UNKNOWN";
  if (typeof error === "string") return error;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") return code;
  return error instanceof Error ? error.message : String(error);
}

const SPIFFE_ID = /^spiffe:\/\/[a-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** A SPIFFE id as the SPIFFE standard defines it: lowercase trust domain, no trailing slash, no query. */
export function isSpiffeId(value: string): boolean {
  return value.length <= 2048 && SPIFFE_ID.test(value) && !value.split("/").slice(3).some((s) => s === "." || s === "..");
}

/** The trust domain of a SPIFFE id: "matih.local" for "spiffe://matih.local/dev". */
export function spiffeTrustDomain(spiffeId: string): string {
  return spiffeId.slice("spiffe://".length).split("/")[0] ?? "";
}

export interface SubjectAltName {
  /** "DNS", "URI", "IP Address", "email", ... */
  readonly type: string;
  readonly value: string;
}

/**
 * Parses Node's `subjectAltName` string ("DNS:localhost, URI:spiffe://x/y").
 * Node writes a value holding a delimiter (",", ":", quotes...) as a JSON
 * string literal, so a crafted DNS name cannot smuggle in a second entry;
 * splitting naively on ", " would undo that protection.
 */
export function parseSubjectAltName(text: string): SubjectAltName[] {
  const names: SubjectAltName[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(":", i);
    if (colon < 0) break;
    const type = text.slice(i, colon);
    i = colon + 1;
    let value: string;
    if (text[i] === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(text.slice(i, j + 1)) as string;
      } catch {
        value = "";
      }
      i = j + 1;
    } else {
      const end = text.indexOf(", ", i);
      value = text.slice(i, end < 0 ? text.length : end);
      i = end < 0 ? text.length : end;
    }
    names.push({ type, value });
    if (text.startsWith(", ", i)) i += 2;
  }
  return names;
}
