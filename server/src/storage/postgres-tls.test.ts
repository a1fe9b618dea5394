import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TLSSocket } from "node:tls";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "./open-database.js";
import { type PostgresTlsOptions, resolvePostgresConnection } from "./postgres-tls.js";

describe("resolvePostgresConnection", () => {
  it("uses plaintext when neither the URL nor the options ask for TLS", async () => {
    expect(await resolvePostgresConnection("postgres://u@db:5432/kms", undefined)).toEqual({
      connectionString: "postgres://u@db:5432/kms",
      ssl: false,
    });
  });

  it("removes the TLS parameters from the URL and keeps the rest, password included", async () => {
    const resolved = await resolvePostgresConnection(
      "postgres://u:p%40ss@db:5432/kms?application_name=kms&sslmode=verify-full&ssl=true",
      undefined,
    );
    expect(resolved.connectionString).toBe("postgres://u:p%40ss@db:5432/kms?application_name=kms");
    expect(resolved.ssl).toEqual({ rejectUnauthorized: true });
  });

  it("maps sslmode as libpq does: require skips verification unless a CA is given", async () => {
    expect((await resolvePostgresConnection("postgres://db/kms?sslmode=require", undefined)).ssl).toEqual({
      rejectUnauthorized: false,
    });
    const withCa = (await resolvePostgresConnection("postgres://db/kms?sslmode=require", { ca: "CA" })).ssl;
    expect(withCa).toMatchObject({ ca: "CA", rejectUnauthorized: true });
    expect(withCa && withCa.checkServerIdentity?.("other-host", {} as never)).toBeUndefined();
  });

  it("lets explicit options win over the URL", async () => {
    const resolved = await resolvePostgresConnection("postgres://db/kms?sslmode=verify-full", {
      rejectUnauthorized: false,
      servername: "db.internal",
    });
    expect(resolved.ssl).toEqual({ rejectUnauthorized: false, servername: "db.internal" });
  });

  it("turns on verified TLS when only explicit options are given", async () => {
    expect((await resolvePostgresConnection("postgres://db/kms", { ca: "CA" })).ssl).toEqual({
      ca: "CA",
      rejectUnauthorized: true,
    });
  });

  it("refuses allow and prefer (plaintext fallback), unknown modes, and disable with TLS options", async () => {
    await expect(resolvePostgresConnection("postgres://db/kms?sslmode=prefer", undefined)).rejects.toThrow(/not supported/);
    await expect(resolvePostgresConnection("postgres://db/kms?sslmode=allow", undefined)).rejects.toThrow(/not supported/);
    await expect(resolvePostgresConnection("postgres://db/kms?sslmode=bogus", undefined)).rejects.toThrow(/unknown sslmode/);
    await expect(resolvePostgresConnection("postgres://db/kms?sslmode=disable", { ca: "CA" })).rejects.toThrow(
      /contradicts/,
    );
  });

  it("does not echo an unparseable URL, which may hold a password", async () => {
    await expect(resolvePostgresConnection("not a url secret-password", undefined)).rejects.toThrow(
      /^the database URL is not a valid URL$/,
    );
  });
});

/**
 * A stand-in PostgreSQL server that answers the SSLRequest, completes a TLS
 * handshake with a certificate for "db.example.internal" (signed by a test
 * CA), and hangs up: enough to see what the client asked for and verified.
 */
describe("openDatabase TLS against a server", () => {
  let dir: string;
  let caPem: string;
  let server: Server;
  let port: number;
  const seen: Array<"plaintext" | "tls-request" | "tls-established"> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "kms-tls-"));
    const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem");
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=db",
      "-keyout", "server.key", "-out", "server.csr");
    writeFileSync(join(dir, "server.ext"), "subjectAltName = DNS:db.example.internal\n");
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
      "-extfile", "server.ext", "-out", "server.pem");
    caPem = readFileSync(join(dir, "ca.pem"), "utf8");
    const key = readFileSync(join(dir, "server.key"));
    const cert = readFileSync(join(dir, "server.pem"));

    server = createServer((socket: Socket) => {
      socket.once("data", (first) => {
        // SSLRequest: length 8, code 80877103.
        if (first.length >= 8 && first.readInt32BE(4) === 80877103) {
          seen.push("tls-request");
          socket.write("S");
          const secure = new TLSSocket(socket, { isServer: true, key, cert });
          secure.on("secure", () => {
            seen.push("tls-established");
            secure.destroy();
          });
          secure.on("error", () => socket.destroy());
        } else {
          seen.push("plaintext");
          socket.destroy();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as { port: number }).port;
  });

  afterAll(async () => {
    if (server !== undefined) await new Promise((resolve) => server.close(resolve));
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  async function attempt(query: string, ssl?: PostgresTlsOptions) {
    seen.length = 0;
    const opened = await openDatabase({ databaseUrl: `postgres://kms@127.0.0.1:${port}/kms${query}`, ssl });
    const error = await sql`select 1`.execute(opened.db).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    await opened.close();
    return { seen: [...seen], error };
  }

  it("sslmode=disable speaks plaintext", async () => {
    expect((await attempt("?sslmode=disable")).seen).toEqual(["plaintext"]);
  });

  it("sslmode=require encrypts without verifying the server", async () => {
    expect((await attempt("?sslmode=require")).seen).toEqual(["tls-request", "tls-established"]);
  });

  it("sslmode=verify-full refuses a server whose CA is not trusted", async () => {
    const { seen: events, error } = await attempt("?sslmode=verify-full");
    expect(events).not.toContain("tls-established");
    expect(error?.code).toMatch(/CERT|SIGNATURE|ISSUER/);
  });

  it("sslmode=verify-full with a trusted CA still refuses a host name the certificate does not name", async () => {
    const { seen: events, error } = await attempt("?sslmode=verify-full", { ca: caPem });
    expect(events).not.toContain("tls-established");
    expect(error?.code).toBe("ERR_TLS_CERT_ALTNAME_INVALID");
  });

  it("sslmode=verify-full accepts the server under the name its certificate carries", async () => {
    const { seen: events } = await attempt("?sslmode=verify-full", { ca: caPem, servername: "db.example.internal" });
    expect(events).toEqual(["tls-request", "tls-established"]);
  });

  it("sslmode=verify-ca checks the chain but not the host name, reading the CA from sslrootcert", async () => {
    const { seen: events } = await attempt(`?sslmode=verify-ca&sslrootcert=${encodeURIComponent(join(dir, "ca.pem"))}`);
    expect(events).toEqual(["tls-request", "tls-established"]);
  });
});
