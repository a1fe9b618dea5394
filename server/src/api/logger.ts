/**
 * The server's logging port: three levels, a message and structured fields.
 *
 * Rules for callers (enforced by review, not by code): never pass request or
 * response bodies, bearer tokens, key material or DEK references as fields.
 * Log identities (SPIFFE id, tenant id, token subject), reasons, routes and
 * durations.
 */
export type LogFields = Readonly<Record<string, unknown>>;

export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export type LogLevel = "info" | "warn" | "error";

export interface JsonLinesLoggerOptions {
  /** Where each line goes; defaults to process.stdout. */
  readonly write?: (line: string) => void;
  /** Added to every line as `component`. */
  readonly component?: string;
  /** The clock for the `time` field. */
  readonly now?: () => Date;
}

/**
 * A logger writing one JSON object per line:
 * `{"time":"...","level":"info","msg":"...","component":"api",...fields}`.
 * Errors in fields are written as `{name, message, code?, stack}`; bigints as
 * strings; byte arrays only by length (they may be key material).
 */
export function createJsonLinesLogger(options: JsonLinesLoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => void process.stdout.write(line));
  const now = options.now ?? (() => new Date());
  const emit = (level: LogLevel, message: string, fields: LogFields | undefined): void => {
    const record: Record<string, unknown> = { time: now().toISOString(), level, msg: message };
    if (options.component !== undefined) record["component"] = options.component;
    if (fields !== undefined) {
      for (const [name, value] of Object.entries(fields)) {
        if (name === "time" || name === "level" || name === "msg") continue;
        record[name] = value;
      }
    }
    write(safeStringify(record) + "\n");
  };
  return {
    info: (message, fields) => emit("info", message, fields),
    warn: (message, fields) => emit("warn", message, fields),
    error: (message, fields) => emit("error", message, fields),
  };
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  info: () => {},
  warn: () => {},
  error: () => {},
};

/** JSON.stringify that survives Errors, bigints, byte arrays and cycles. */
export function safeStringify(value: unknown): string {
  const seen = new WeakSet<object>();
  return JSON.stringify(value, function replacer(this: unknown, _key: string, v: unknown): unknown {
    if (typeof v === "bigint") return v.toString();
    if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
    if (v instanceof Error) return describeError(v);
    if (typeof v === "object" && v !== null) {
      if (seen.has(v)) return "<cycle>";
      seen.add(v);
    }
    return v;
  });
}

function describeError(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" || typeof code === "number") out["code"] = code;
  if (err.stack !== undefined) out["stack"] = err.stack;
  if (err.cause !== undefined) out["cause"] = err.cause instanceof Error ? describeError(err.cause) : String(err.cause);
  return out;
}
