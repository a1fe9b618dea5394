import type { IncomingHttpHeaders } from "node:http";
import type { IncomingHttpHeaders as IncomingHttp2Headers } from "node:http2";

/**
 * A fetch-API `Headers` from Node's request headers.
 *
 * Over HTTP/2, `req.headers` also holds pseudo-headers (":path", ":method",
 * ...) and a Symbol key (`http2.sensitiveHeaders`); `new Headers(req.headers)`
 * throws on either. Both are skipped; repeated headers are joined with ", ".
 */
export function headersFromNode(headers: IncomingHttpHeaders | IncomingHttp2Headers): Headers {
  const out = new Headers();
  for (const name of Object.keys(headers)) {
    if (name.startsWith(":")) continue;
    const value = (headers as Record<string, string | string[] | undefined>)[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      for (const item of value) out.append(name, item);
    } else {
      out.append(name, value);
    }
  }
  return out;
}

/** One header's value as a single string (first of repeated values), or undefined. */
export function singleHeader(headers: IncomingHttpHeaders | IncomingHttp2Headers, name: string): string | undefined {
  const value = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(value) ? value[0] : value;
}
