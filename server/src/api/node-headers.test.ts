import { sensitiveHeaders } from "node:http2";
import { describe, expect, it } from "vitest";
import { headersFromNode } from "./node-headers.js";

describe("headersFromNode", () => {
  it("skips HTTP/2 pseudo-headers and the sensitiveHeaders symbol that make `new Headers()` throw", () => {
    const raw = {
      ":method": "POST",
      ":path": "/x",
      ":authority": "localhost",
      "content-type": "application/json",
      "x-many": ["a", "b"],
      [sensitiveHeaders]: ["authorization"],
    };
    expect(() => new Headers(raw as unknown as Record<string, string>)).toThrow();
    const headers = headersFromNode(raw as never);
    expect([...headers.keys()]).toEqual(["content-type", "x-many"]);
    expect(headers.get("x-many")).toBe("a, b");
  });
});
