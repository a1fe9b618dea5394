import { describe, expect, it } from "vitest";
import { percentEncodeGrpcMessage } from "./grpc-message-encoding.js";

describe("grpc-message encoding", () => {
  it("keeps printable ASCII as is, so grpc-js's decodeURI returns the message unchanged", () => {
    const message = "key_id: tenant acme has no key pii (see /docs?x=1&y=2#z, $5 @ 100+)";
    const encoded = percentEncodeGrpcMessage(message);
    expect(encoded).toBe(message);
    expect(decodeURI(encoded)).toBe(message);
  });

  it("percent-encodes '%', control characters and non-ASCII as UTF-8 bytes", () => {
    expect(percentEncodeGrpcMessage("100% sure\nnaïve")).toBe("100%25 sure%0Ana%C3%AFve");
    expect(decodeURIComponent(percentEncodeGrpcMessage("100% sure\nnaïve"))).toBe("100% sure\nnaïve");
  });
});
