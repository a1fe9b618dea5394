/**
 * connect-node writes the `grpc-message` trailer with encodeURIComponent, but
 * the gRPC spec percent-encodes only bytes outside printable ASCII and '%',
 * and grpc-js decodes with decodeURI — so a plain grpc-js caller saw
 * "key_id%3A tenant ..." where REST and Connect callers see "key_id: ...".
 * This re-encodes the message the way the spec says, on both places it can
 * appear: the trailers, and the headers of a trailers-only response.
 */
/** The two methods through which connect-node writes gRPC status fields. */
interface TrailerWriter {
  writeHead(...args: unknown[]): unknown;
  addTrailers(headers: unknown): void;
}

type HeaderBag = Record<string, unknown>;

const GRPC_MESSAGE = "grpc-message";

export function percentEncodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function fix(headers: unknown): void {
  if (headers === null || typeof headers !== "object" || Array.isArray(headers)) return;
  const bag = headers as HeaderBag;
  const value = bag[GRPC_MESSAGE];
  if (typeof value !== "string") return;
  let decoded: string;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    return;
  }
  bag[GRPC_MESSAGE] = percentEncodeGrpcMessage(decoded);
}

/** Applies to gRPC (not gRPC-Web, whose trailers travel in the body) responses only. */
export function useSpecGrpcMessageEncoding(contentType: string | undefined, res: object): void {
  if (contentType === undefined || !/^application\/grpc(\+|;|$)/.test(contentType)) return;
  const response = res as TrailerWriter;
  const writeHead = response.writeHead.bind(response);
  const addTrailers = response.addTrailers.bind(response);
  response.writeHead = (...args: unknown[]) => {
    for (const arg of args) fix(arg);
    return writeHead(...args);
  };
  response.addTrailers = (headers: unknown) => {
    fix(headers);
    addTrailers(headers);
  };
}
