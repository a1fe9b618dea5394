/**
 * Server-side verification of AWS Signature Version 4 (header form), written
 * from AWS's published algorithm: canonical request, string to sign, derived
 * signing key, HMAC-SHA256. Used by the local KMS server so the real SDK's
 * signing is exercised, not bypassed.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";

export interface SigV4Credential {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** When set, the request must carry it in a signed x-amz-security-token header. */
  readonly sessionToken?: string;
}

export interface SigV4Request {
  readonly method: string;
  /** Path and query exactly as received, e.g. "/". */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

export type SigV4Failure =
  | { readonly error: "MissingAuthenticationTokenException"; readonly message: string }
  | { readonly error: "IncompleteSignatureException"; readonly message: string }
  | { readonly error: "UnrecognizedClientException"; readonly message: string }
  | { readonly error: "InvalidSignatureException"; readonly message: string };

export type SigV4Result = { readonly ok: true; readonly accessKeyId: string } | ({ readonly ok: false } & SigV4Failure);

const ALGORITHM = "AWS4-HMAC-SHA256";
const MAX_SKEW_MS = 5 * 60 * 1000;

export function verifySigV4(
  request: SigV4Request,
  expected: { readonly region: string; readonly service: string; readonly now: Date },
  lookup: (accessKeyId: string) => SigV4Credential | undefined,
): SigV4Result {
  const authorization = single(request.headers["authorization"]);
  if (authorization === undefined) return { ok: false, error: "MissingAuthenticationTokenException", message: "Missing Authentication Token" };
  const parsed = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(authorization.trim());
  if (parsed === null) return { ok: false, error: "IncompleteSignatureException", message: "Authorization header is not an AWS4-HMAC-SHA256 signature" };
  const [, credential = "", signedHeaderList = "", signature = ""] = parsed;

  const scopeParts = credential.split("/");
  if (scopeParts.length !== 5) return { ok: false, error: "IncompleteSignatureException", message: "Credential must be AKID/date/region/service/aws4_request" };
  const [accessKeyId = "", scopeDate = "", region = "", service = "", terminator = ""] = scopeParts;
  const secret = lookup(accessKeyId);
  if (secret === undefined) return { ok: false, error: "UnrecognizedClientException", message: "The security token included in the request is invalid." };

  const amzDate = single(request.headers["x-amz-date"]);
  if (amzDate === undefined || !/^\d{8}T\d{6}Z$/.test(amzDate)) {
    return { ok: false, error: "IncompleteSignatureException", message: "x-amz-date is missing or malformed" };
  }
  if (terminator !== "aws4_request" || service !== expected.service || region !== expected.region || scopeDate !== amzDate.slice(0, 8)) {
    return {
      ok: false,
      error: "InvalidSignatureException",
      message: `Credential should be scoped to a valid region and service (${expected.region}/${expected.service}), and to the request's date`,
    };
  }
  const signedAt = Date.parse(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
  if (!Number.isFinite(signedAt) || Math.abs(expected.now.getTime() - signedAt) > MAX_SKEW_MS) {
    return { ok: false, error: "InvalidSignatureException", message: "Signature expired or not yet current: the signing time is more than 5 minutes from the server's time" };
  }

  const signedHeaders = signedHeaderList.split(";");
  if (!signedHeaders.includes("host") || !signedHeaders.includes("x-amz-date")) {
    return { ok: false, error: "IncompleteSignatureException", message: "SignedHeaders must include host and x-amz-date" };
  }
  if (signedHeaders.join(";") !== [...signedHeaders].sort().join(";")) {
    return { ok: false, error: "IncompleteSignatureException", message: "SignedHeaders must be sorted" };
  }
  if (secret.sessionToken !== undefined) {
    if (!signedHeaders.includes("x-amz-security-token") || single(request.headers["x-amz-security-token"]) !== secret.sessionToken) {
      return { ok: false, error: "UnrecognizedClientException", message: "The security token included in the request is invalid." };
    }
  }
  const payloadHash = createHash("sha256").update(request.body).digest("hex");
  const declaredHash = single(request.headers["x-amz-content-sha256"]);
  if (declaredHash !== undefined && declaredHash !== payloadHash) {
    return { ok: false, error: "InvalidSignatureException", message: "x-amz-content-sha256 does not match the body" };
  }

  const canonicalHeaders = signedHeaders.map((name) => `${name}:${canonicalHeaderValue(request.headers[name])}\n`).join("");
  const { path, query } = splitUrl(request.url);
  const canonicalRequest = [request.method.toUpperCase(), canonicalUri(path), canonicalQuery(query), canonicalHeaders, signedHeaderList, payloadHash].join("\n");
  const scope = `${scopeDate}/${region}/${service}/aws4_request`;
  const stringToSign = [ALGORITHM, amzDate, scope, sha256Hex(canonicalRequest)].join("\n");
  const signingKey = [scopeDate, region, service, "aws4_request"].reduce<Buffer>(
    (key, part) => hmac(key, part),
    Buffer.from(`AWS4${secret.secretAccessKey}`, "utf8"),
  );
  const computed = hmac(signingKey, stringToSign);
  const given = Buffer.from(signature, "hex");
  if (given.length !== computed.length || !timingSafeEqual(given, computed)) {
    return {
      ok: false,
      error: "InvalidSignatureException",
      message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
    };
  }
  return { ok: true, accessKeyId };
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(",") : value;
}

function canonicalHeaderValue(value: string | string[] | undefined): string {
  const values = value === undefined ? [""] : Array.isArray(value) ? value : [value];
  return values.map((v) => v.trim().replace(/\s+/g, " ")).join(",");
}

function splitUrl(url: string): { path: string; query: string } {
  const at = url.indexOf("?");
  return at < 0 ? { path: url, query: "" } : { path: url.slice(0, at), query: url.slice(at + 1) };
}

/** Non-S3 services encode each path segment twice: once as sent, once more when canonicalised. */
function canonicalUri(path: string): string {
  if (path === "" || path === "/") return "/";
  return path
    .split("/")
    .map((segment) => uriEncode(uriEncode(decodeURIComponent(segment))))
    .join("/");
}

function canonicalQuery(query: string): string {
  if (query === "") return "";
  return query
    .split("&")
    .map((pair) => {
      const at = pair.indexOf("=");
      const name = decodeURIComponent(at < 0 ? pair : pair.slice(0, at));
      const value = at < 0 ? "" : decodeURIComponent(pair.slice(at + 1).replace(/\+/g, " "));
      return [uriEncode(name), uriEncode(value)] as const;
    })
    .sort(([a, av], [b, bv]) => (a === b ? (av < bv ? -1 : av > bv ? 1 : 0) : a < b ? -1 : 1))
    .map(([name, value]) => `${name}=${value}`)
    .join("&");
}

/** RFC 3986 unreserved characters stay; everything else is %XX (upper case). */
function uriEncode(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(value: string): string {
  return createHash("sha256").update(value, "utf8").digest("hex");
}

function hmac(key: Buffer, value: string): Buffer {
  return createHmac("sha256", key).update(value, "utf8").digest();
}
