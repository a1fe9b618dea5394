import { X509Certificate } from "node:crypto";
import { mkdtemp, rm, stat, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEV_CLIENT_SPIFFE_ID, ensureDevelopmentPki } from "./dev-pki.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "matih-kms-devpki-"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("ensureDevelopmentPki", () => {
  it("creates a CA, a localhost server certificate and a SPIFFE client certificate, keys 0600", async () => {
    const pki = await ensureDevelopmentPki(join(dir, "tls"));
    const ca = new X509Certificate(pki.caCert);
    const serverCert = new X509Certificate(pki.serverCert);
    const clientCert = new X509Certificate(pki.clientCert);
    expect(ca.ca).toBe(true);
    expect(serverCert.checkIssued(ca) && serverCert.verify(ca.publicKey)).toBe(true);
    expect(clientCert.checkIssued(ca) && clientCert.verify(ca.publicKey)).toBe(true);
    expect(serverCert.subjectAltName).toContain("DNS:localhost");
    expect(serverCert.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(serverCert.checkIP("::1")).toBe("::1");
    expect(clientCert.subjectAltName).toBe(`URI:${DEV_CLIENT_SPIFFE_ID}`);
    expect(clientCert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    for (const path of [pki.caKeyPath, pki.serverKeyPath, pki.clientKeyPath]) {
      expect((await stat(path)).mode & 0o777).toBe(0o600);
    }
  });

  it("reuses what exists and re-issues only what is missing", async () => {
    const first = await ensureDevelopmentPki(join(dir, "tls"));
    const again = await ensureDevelopmentPki(join(dir, "tls"));
    expect(again.caCert).toBe(first.caCert);
    expect(again.serverCert).toBe(first.serverCert);
    await unlink(first.clientCertPath);
    const repaired = await ensureDevelopmentPki(join(dir, "tls"));
    expect(repaired.caCert).toBe(first.caCert);
    expect(repaired.serverCert).toBe(first.serverCert);
    expect(repaired.clientCert).not.toBe(first.clientCert);
  });

  it("re-issues leaves that are about to expire, from the same CA", async () => {
    const first = await ensureDevelopmentPki(join(dir, "tls"));
    const later = await ensureDevelopmentPki(join(dir, "tls"), { now: new Date(Date.now() + 364 * 86_400_000) });
    expect(later.caCert).toBe(first.caCert);
    expect(later.serverCert).not.toBe(first.serverCert);
  });
});
