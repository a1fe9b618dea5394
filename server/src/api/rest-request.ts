import {
  create,
  fromJson,
  isFieldSet,
  mergeFromJson,
  ScalarType,
  type DescField,
  type DescMessage,
  type JsonObject,
  type JsonValue,
  type MessageShape,
} from "@bufbuild/protobuf";
import { KmsError } from "../domain/kms-error.js";

/**
 * Building a request message from the three parts of a REST call, following
 * the `google.api.http` rules:
 *
 * - path variables set the fields they name (path wins: a body that sets the
 *   same field to another value is refused with INVALID_FIELD);
 * - `body: "*"`: the JSON body is the whole message and there are no query
 *   parameters; `body: "field"`: the body is that field; no body: none allowed;
 * - query parameters set every field not bound by the path or the body, by
 *   proto name or JSON name, dotted for nested fields, repeated by repeating
 *   the parameter; enums by name (or number). Unknown parameters are refused.
 *
 * JSON is strict proto3 JSON: unknown fields are MALFORMED_BODY naming the
 * field; bad values are MALFORMED_BODY naming the field.
 */
export interface RestRequestBinding {
  readonly input: DescMessage;
  /** "" (no body), "*" (whole message) or a top-level field name. */
  readonly body: string;
}

const JSON_READ = { ignoreUnknownFields: false } as const;

/** Resolves a dotted field path by proto names (and JSON names if allowed). */
export function resolveFieldPath(schema: DescMessage, dotted: string, acceptJsonNames: boolean): DescField[] | undefined {
  const fields: DescField[] = [];
  let current: DescMessage | undefined = schema;
  for (const part of dotted.split(".")) {
    if (current === undefined) return undefined;
    const field: DescField | undefined = current.fields.find((f) => f.name === part || (acceptJsonNames && f.jsonName === part));
    if (field === undefined) return undefined;
    fields.push(field);
    current = field.fieldKind === "message" ? field.message : undefined;
  }
  return fields;
}

/** Checks, at start-up, that a path variable names a singular scalar or enum field. */
export function assertPathVariableField(schema: DescMessage, fieldPath: string, where: string): void {
  const fields = resolveFieldPath(schema, fieldPath, false);
  const leaf = fields?.[fields.length - 1];
  if (fields === undefined || leaf === undefined) throw new Error(`${where}: path variable "${fieldPath}" names no field of ${schema.typeName}`);
  if (fields.slice(0, -1).some((f) => f.fieldKind !== "message")) throw new Error(`${where}: "${fieldPath}" crosses a non-message field`);
  if (leaf.fieldKind !== "scalar" && leaf.fieldKind !== "enum") throw new Error(`${where}: "${fieldPath}" must name a scalar or enum field`);
}

/** Turns one textual value (path segment or query parameter) into its proto3 JSON form. */
function jsonFromText(field: DescField, text: string): JsonValue {
  const kind = field.fieldKind === "list" ? field.listKind : field.fieldKind;
  if (kind === "enum") return /^-?\d+$/.test(text) ? Number(text) : text;
  if (kind !== "scalar") return text; // well-known message types parse from their string forms
  const scalar = field.scalar;
  switch (scalar) {
    case ScalarType.BOOL:
      if (text === "true" || text === "1") return true;
      if (text === "false" || text === "0") return false;
      return text; // refused by fromJson with a clear message
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE:
      return text === "NaN" || text === "Infinity" || text === "-Infinity" || text.trim() === "" ? text : Number(text);
    default:
      return text; // strings, bytes (base64) and integers (decimal strings) in proto3 JSON
  }
}

/** `{a: {b: value}}` for the field path a.b, by proto names. */
function nestJson(fields: readonly DescField[], value: JsonValue): JsonObject {
  let json: JsonValue = value;
  for (let i = fields.length - 1; i >= 0; i--) json = { [fields[i]?.name ?? ""]: json };
  return json as JsonObject;
}

function readLeaf(message: unknown, fields: readonly DescField[]): { set: boolean; value: unknown } {
  let current = message as Record<string, unknown> | undefined;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i];
    if (field === undefined || current === undefined) return { set: false, value: undefined };
    if (i === fields.length - 1) {
      return { set: isFieldSet(current as MessageShape<DescMessage>, field), value: current[field.localName] };
    }
    current = current[field.localName] as Record<string, unknown> | undefined;
  }
  return { set: false, value: undefined };
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  }
  return a === b;
}

function describeDecodeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Sets a field from text, or throws INVALID_FIELD naming `fieldName`. */
function mergeText<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc>,
  fields: readonly DescField[],
  values: readonly string[],
  fieldName: string,
): void {
  const leaf = fields[fields.length - 1];
  if (leaf === undefined) return;
  const jsonValue: JsonValue = leaf.fieldKind === "list" ? values.map((v) => jsonFromText(leaf, v)) : jsonFromText(leaf, values[0] ?? "");
  try {
    mergeFromJson(schema, message, nestJson(fields, jsonValue), JSON_READ);
  } catch (err) {
    throw new KmsError("INVALID_FIELD", `${fieldName}: ${JSON.stringify(values.length === 1 ? values[0] : values)} is not a valid value (${describeDecodeError(err)})`, {
      field: fieldName,
    });
  }
}

/** Parses the body text as JSON; MALFORMED_BODY when it is not. */
export function parseJsonBody(text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch (err) {
    throw new KmsError("MALFORMED_BODY", `the request body is not valid JSON (${describeDecodeError(err)})`);
  }
}

const WELL_KNOWN_PREFIX = "google.protobuf.";

/**
 * Walks a JSON value against a message schema and throws MALFORMED_BODY for
 * the first unknown key or undecodable value, naming its field path. protobuf-es
 * refuses the same input, but its messages do not always say which field.
 */
function checkJsonAgainstSchema(schema: DescMessage, json: JsonValue, path: string): void {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new KmsError("MALFORMED_BODY", `${path === "" ? "the request body" : path} must be a JSON object`, path === "" ? {} : { field: path });
  }
  for (const [key, value] of Object.entries(json)) {
    const fieldPath = path === "" ? key : `${path}.${key}`;
    const field = schema.fields.find((f) => f.name === key || f.jsonName === key);
    if (field === undefined) {
      throw new KmsError("MALFORMED_BODY", `the request body has an unknown field "${fieldPath}"`, { field: fieldPath });
    }
    const namedPath = path === "" ? field.name : `${path}.${field.name}`;
    if (value === null) continue;
    if (field.fieldKind === "message" && !field.message.typeName.startsWith(WELL_KNOWN_PREFIX)) {
      checkJsonAgainstSchema(field.message, value, namedPath);
      continue;
    }
    if (field.fieldKind === "list" && field.listKind === "message" && !field.message.typeName.startsWith(WELL_KNOWN_PREFIX) && Array.isArray(value)) {
      value.forEach((element, i) => {
        if (element !== null) checkJsonAgainstSchema(field.message, element, `${namedPath}[${i}]`);
      });
      continue;
    }
    if (field.fieldKind === "map" && field.mapKind === "message" && !field.message.typeName.startsWith(WELL_KNOWN_PREFIX) && isJsonObject(value)) {
      for (const [mapKey, element] of Object.entries(value)) {
        if (element !== null) checkJsonAgainstSchema(field.message, element, `${namedPath}["${mapKey}"]`);
      }
      continue;
    }
    try {
      fromJson(schema, { [key]: value }, JSON_READ);
    } catch (err) {
      throw new KmsError("MALFORMED_BODY", `the request body field "${namedPath}" has an invalid value (${describeDecodeError(err)})`, {
        field: namedPath,
      });
    }
  }
}

function isJsonObject(value: JsonValue): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The request message for one REST call. `pathVariables` come from the
 * matched template (decoded), `query` from the URL, `body` is the raw body
 * text ("" when empty).
 */
export function buildRestRequest<Desc extends DescMessage>(
  binding: RestRequestBinding & { readonly input: Desc },
  pathVariables: ReadonlyMap<string, string>,
  query: URLSearchParams,
  body: string,
): MessageShape<Desc> {
  const schema = binding.input;
  const message = create(schema) as MessageShape<Desc>;

  // 1. The body.
  if (binding.body === "") {
    if (body.trim() !== "") throw new KmsError("MALFORMED_BODY", "this route takes no request body");
  } else if (body.trim() !== "") {
    const json = parseJsonBody(body);
    const wrapped: JsonValue = binding.body === "*" ? json : { [binding.body]: json };
    checkJsonAgainstSchema(schema, wrapped, "");
    try {
      mergeFromJson(schema, message, wrapped, JSON_READ);
    } catch (err) {
      throw new KmsError("MALFORMED_BODY", `the request body is not a valid ${schema.typeName} (${describeDecodeError(err)})`);
    }
  }

  // 2. Path variables: they win, and a body that contradicts one is refused.
  const pathBound = new Set<string>();
  for (const [fieldPath, text] of pathVariables) {
    const fields = resolveFieldPath(schema, fieldPath, false);
    if (fields === undefined) throw new Error(`path variable ${fieldPath} names no field of ${schema.typeName}`);
    pathBound.add(fields.map((f) => f.name).join("."));
    const fromBody = readLeaf(message, fields);
    const scratch = create(schema) as MessageShape<Desc>;
    mergeText(schema, scratch, fields, [text], fieldPath);
    const fromPath = readLeaf(scratch, fields);
    if (fromBody.set && !sameValue(fromBody.value, fromPath.value)) {
      throw new KmsError("INVALID_FIELD", `${fieldPath}: the request body sets it to a different value than the path`, { field: fieldPath });
    }
    mergeText(schema, message, fields, [text], fieldPath);
  }

  // 3. Query parameters: only for fields neither the path nor the body binds.
  const names = [...new Set(query.keys())];
  for (const name of names) {
    const values = query.getAll(name);
    const fields = resolveFieldPath(schema, name, true);
    const leaf = fields?.[fields.length - 1];
    if (fields === undefined || leaf === undefined || binding.body === "*") {
      throw new KmsError("INVALID_FIELD", `${name}: unknown query parameter`, { field: name });
    }
    const protoPath = fields.map((f) => f.name).join(".");
    if ([...pathBound].some((bound) => protoPath === bound || protoPath.startsWith(`${bound}.`) || bound.startsWith(`${protoPath}.`))) {
      throw new KmsError("INVALID_FIELD", `${name}: this field is given by the path, not a query parameter`, { field: protoPath });
    }
    if (binding.body !== "" && (protoPath === binding.body || protoPath.startsWith(`${binding.body}.`))) {
      throw new KmsError("INVALID_FIELD", `${name}: this field is given by the request body, not a query parameter`, { field: protoPath });
    }
    const leafKind = leaf.fieldKind === "list" ? leaf.listKind : leaf.fieldKind;
    const queryable =
      fields.slice(0, -1).every((f) => f.fieldKind === "message") &&
      (leafKind === "scalar" ||
        leafKind === "enum" ||
        (leafKind === "message" && leaf.message !== undefined && leaf.message.typeName.startsWith(WELL_KNOWN_PREFIX)));
    if (!queryable || leaf.fieldKind === "map") {
      throw new KmsError("INVALID_FIELD", `${name}: this field cannot be set from a query parameter`, { field: protoPath });
    }
    if (leaf.fieldKind !== "list" && values.length > 1) {
      throw new KmsError("INVALID_FIELD", `${name}: given more than once but the field is not repeated`, { field: protoPath });
    }
    mergeText(schema, message, fields, values, protoPath);
  }
  return message;
}
