import { KmsError } from "../domain/kms-error.js";

/**
 * `google.api.http` path templates:
 *
 * ```
 * Template = "/" Segments [ Verb ] ;
 * Segments = Segment { "/" Segment } ;
 * Segment  = "*" | "**" | LITERAL | Variable ;
 * Variable = "{" FieldPath [ "=" Segments ] "}" ;
 * FieldPath = IDENT { "." IDENT } ;
 * Verb     = ":" LITERAL ;
 * ```
 *
 * `{var}` is `{var=*}`: one path segment. `**` matches zero or more segments
 * and may only be the last segment. A trailing `:verb` ("...:decrypt") is part
 * of the last segment on the wire.
 */
export interface PathTemplate {
  readonly source: string;
  readonly segments: readonly TemplateSegment[];
  readonly verb: string | undefined;
  readonly variables: readonly TemplateVariable[];
}

export type TemplateSegment =
  | { readonly kind: "literal"; readonly value: string }
  | { readonly kind: "single" }
  | { readonly kind: "multi" };

export interface TemplateVariable {
  /** Dotted proto field path, e.g. "tenant_id" or "key.name". */
  readonly fieldPath: string;
  /** First segment index the variable covers. */
  readonly start: number;
  /** One past the last segment index it covers (Infinity-like for `**`: to the end). */
  readonly end: number;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LITERAL_STOP = new Set(["/", ":", "{", "}", "*", "="]);

/** Parses a template; throws Error (a start-up fault) when it is malformed. */
export function parsePathTemplate(source: string): PathTemplate {
  let pos = 0;
  const segments: TemplateSegment[] = [];
  const variables: TemplateVariable[] = [];
  const fail = (what: string): never => {
    throw new Error(`invalid path template "${source}" at ${pos}: ${what}`);
  };
  const peek = (): string | undefined => source[pos];

  const parseLiteral = (): string => {
    const start = pos;
    while (pos < source.length && !LITERAL_STOP.has(source[pos] ?? "")) pos++;
    if (pos === start) fail("expected a literal");
    return source.slice(start, pos);
  };

  const parseSegment = (inVariable: boolean): void => {
    if (source.startsWith("**", pos)) {
      pos += 2;
      segments.push({ kind: "multi" });
    } else if (peek() === "*") {
      pos += 1;
      segments.push({ kind: "single" });
    } else if (peek() === "{") {
      if (inVariable) fail("nested variables are not allowed");
      pos += 1;
      const close = source.indexOf("}", pos);
      if (close < 0) fail("unclosed variable");
      const body = source.slice(pos, close);
      const eq = body.indexOf("=");
      const fieldPath = eq < 0 ? body : body.slice(0, eq);
      if (!fieldPath.split(".").every((part) => IDENT.test(part))) fail(`bad field path "${fieldPath}"`);
      if (variables.some((v) => v.fieldPath === fieldPath)) fail(`variable "${fieldPath}" appears twice`);
      const start = segments.length;
      if (eq < 0) {
        segments.push({ kind: "single" });
        pos = close;
      } else {
        pos += eq + 1;
        parseSegments(true);
        if (pos !== close) fail("unexpected character in variable");
      }
      pos = close + 1;
      variables.push({ fieldPath, start, end: segments.length });
    } else {
      segments.push({ kind: "literal", value: parseLiteral() });
    }
  };

  const parseSegments = (inVariable: boolean): void => {
    parseSegment(inVariable);
    while (peek() === "/") {
      pos += 1;
      parseSegment(inVariable);
    }
  };

  if (peek() !== "/") fail('a template starts with "/"');
  pos = 1;
  parseSegments(false);
  let verb: string | undefined;
  if (peek() === ":") {
    pos += 1;
    verb = parseLiteral();
  }
  if (pos !== source.length) fail("unexpected character");
  const multiAt = segments.findIndex((s) => s.kind === "multi");
  if (multiAt >= 0 && multiAt !== segments.length - 1) {
    throw new Error(`invalid path template "${source}": "**" must be the last segment`);
  }
  return { source, segments, verb, variables };
}

/**
 * Matches a raw request path (no query string) against a template. Returns
 * the variables' decoded values by field path, or undefined when the path
 * does not match. Single-segment variables are fully percent-decoded;
 * multi-segment ones keep "%2F" encoded, as the `google.api.http` rules say.
 * An empty segment never matches `*`. Throws INVALID_FIELD when a matched
 * variable holds invalid percent-encoding.
 */
export function matchPathTemplate(template: PathTemplate, rawPath: string): Map<string, string> | undefined {
  let path = rawPath;
  if (template.verb !== undefined) {
    const suffix = `:${template.verb}`;
    if (!path.endsWith(suffix)) return undefined;
    path = path.slice(0, -suffix.length);
  }
  if (!path.startsWith("/")) return undefined;
  const parts = path.slice(1).split("/");
  const { segments } = template;
  const last = segments[segments.length - 1];
  const hasMulti = last?.kind === "multi";
  const fixed = hasMulti ? segments.length - 1 : segments.length;
  if (hasMulti ? parts.length < fixed : parts.length !== fixed) return undefined;
  for (let i = 0; i < fixed; i++) {
    const segment = segments[i];
    const part = parts[i] ?? "";
    if (segment === undefined) return undefined;
    if (segment.kind === "literal") {
      if (part !== segment.value) return undefined;
    } else if (part === "") {
      return undefined;
    }
  }
  const values = new Map<string, string>();
  for (const variable of template.variables) {
    const covered = hasMulti && variable.end === segments.length ? parts.slice(variable.start) : parts.slice(variable.start, variable.end);
    const multi = hasMulti && variable.end === segments.length;
    try {
      values.set(
        variable.fieldPath,
        covered.map((part) => (multi ? decodeKeepingSlash(part) : decodeURIComponent(part))).join("/"),
      );
    } catch {
      throw new KmsError("INVALID_FIELD", `${variable.fieldPath}: the path segment is not valid percent-encoding`, {
        field: variable.fieldPath,
      });
    }
  }
  return values;
}

function decodeKeepingSlash(part: string): string {
  return part
    .split(/%2F/i)
    .map((piece) => decodeURIComponent(piece))
    .join("%2F");
}
