import { describe, expect, it } from "vitest";
import { create, createFileRegistry, toJson, type DescMessage } from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { KmsError } from "../domain/kms-error.js";
import { buildRestRequest } from "./rest-request.js";

// A synthetic message with the field shapes our protos do not have yet:
// repeated scalars, int64, bool, a nested message bound by a dotted path.
const file = create(FileDescriptorProtoSchema, {
  name: "t/test.proto",
  package: "t",
  syntax: "proto3",
  messageType: [
    {
      name: "Req",
      field: [
        { name: "tenant_id", number: 1, type: Type.STRING, label: Label.OPTIONAL, jsonName: "tenantId" },
        { name: "ids", number: 2, type: Type.STRING, label: Label.REPEATED, jsonName: "ids" },
        { name: "big", number: 3, type: Type.INT64, label: Label.OPTIONAL, jsonName: "big" },
        { name: "flag", number: 4, type: Type.BOOL, label: Label.OPTIONAL, jsonName: "flag" },
        { name: "inner", number: 5, type: Type.MESSAGE, typeName: ".t.Inner", label: Label.OPTIONAL, jsonName: "inner" },
      ],
    },
    {
      name: "Inner",
      field: [
        { name: "name", number: 1, type: Type.STRING, label: Label.OPTIONAL, jsonName: "name" },
        { name: "size", number: 2, type: Type.UINT32, label: Label.OPTIONAL, jsonName: "size" },
      ],
    },
  ],
});
const Req = createFileRegistry(file, () => undefined).getMessage("t.Req") as DescMessage;

function build(body: string, vars: Record<string, string>, query: string, bodyField = "") {
  const message = buildRestRequest({ input: Req, body: bodyField }, new Map(Object.entries(vars)), new URLSearchParams(query), body);
  return toJson(Req, message);
}

function refusal(fn: () => unknown): { reason: string; field: string | undefined } {
  try {
    fn();
  } catch (err) {
    return { reason: (err as KmsError).reason, field: (err as KmsError).field };
  }
  throw new Error("not refused");
}

describe("buildRestRequest", () => {
  it("collects repeated query parameters, int64 and bool, and dotted nested fields by either name", () => {
    expect(build("", { tenant_id: "t1" }, "ids=a&ids=b&big=9007199254740993&flag=true&inner.name=x&inner.size=3")).toEqual({
      tenantId: "t1",
      ids: ["a", "b"],
      big: "9007199254740993",
      flag: true,
      inner: { name: "x", size: 3 },
    });
  });

  it("binds a nested path variable", () => {
    expect(build("", { "inner.name": "n1" }, "inner.size=2")).toEqual({ inner: { name: "n1", size: 2 } });
  });

  it("with body: \"inner\", the body is that field and the rest comes from the query", () => {
    expect(build('{"size": 7}', { tenant_id: "t1" }, "flag=1", "inner")).toEqual({ tenantId: "t1", flag: true, inner: { size: 7 } });
    expect(refusal(() => build('{"size": 7}', {}, "inner.size=1", "inner"))).toEqual({ reason: "INVALID_FIELD", field: "inner.size" });
    expect(refusal(() => build('{"bogus": 7}', {}, "", "inner"))).toEqual({ reason: "MALFORMED_BODY", field: "inner.bogus" });
  });

  it("refuses query parameters that are unknown, path-bound, or set a message", () => {
    expect(refusal(() => build("", {}, "nope=1"))).toEqual({ reason: "INVALID_FIELD", field: "nope" });
    expect(refusal(() => build("", { tenant_id: "t1" }, "tenantId=t2"))).toEqual({ reason: "INVALID_FIELD", field: "tenant_id" });
    expect(refusal(() => build("", {}, "inner=x"))).toEqual({ reason: "INVALID_FIELD", field: "inner" });
    expect(refusal(() => build("", {}, "flag=maybe"))).toEqual({ reason: "INVALID_FIELD", field: "flag" });
  });

  it("with body \"*\" accepts no query parameters at all", () => {
    expect(refusal(() => build("{}", {}, "flag=true", "*"))).toEqual({ reason: "INVALID_FIELD", field: "flag" });
  });

  it("refuses a body that contradicts a path variable, but not one that agrees", () => {
    expect(build('{"tenantId": "t1", "flag": true}', { tenant_id: "t1" }, "", "*")).toEqual({ tenantId: "t1", flag: true });
    expect(refusal(() => build('{"tenant_id": "t2"}', { tenant_id: "t1" }, "", "*"))).toEqual({ reason: "INVALID_FIELD", field: "tenant_id" });
  });
});
