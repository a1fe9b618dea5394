/**
 * npm run bench:client [-- --seconds 5 --warmup 1 --keys 20 --versions 5 --messages 10000 --callers 64]
 *
 * The client package's benchmark (issue 4, "Benchmarks"), against the real
 * matih-kms (startKms, development mode) running in a child process:
 *
 *  1. warm-cache decrypt of a 1 KiB envelope, ops/s, next to the AWS
 *     Encryption SDK for JavaScript (raw AES keyring + caching materials
 *     manager) decrypting a 1 KiB message in the same run (target ≥ 3×);
 *  2. warm-cache encrypt of 1 KiB, both libraries;
 *  3. cold cache: 10,000 decrypts spread over 100 DEKs (20 keys × 5 DEK
 *     versions) by 64 concurrent callers must make exactly 100 Decrypt RPCs;
 *  4. the delay from a RevokeKey call to the first refused local decrypt
 *     (pushed by WatchKeyEvents), a few times.
 *
 * Figures are printed and written to bench/results/client-<time>.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Interceptor } from "@connectrpc/connect";
import { createKmsClient, type KmsClient } from "../clients/src/client/kms-client.js";
import { createEnvelopeEncryption } from "../clients/src/envelope/envelope-encryption.js";
import { KmsError } from "../clients/src/errors/kms-error.js";
import { createKmsGrpcTransport } from "../clients/src/transport/grpc-transport.js";
import { createAwsBaseline, type AwsSuite } from "./client/aws-sdk-baseline.js";
import { shuffle, thousands, throughput, type Throughput } from "./client/measure.js";

const { values: flags } = parseArgs({
  options: {
    seconds: { type: "string" },
    warmup: { type: "string" },
    keys: { type: "string" },
    versions: { type: "string" },
    messages: { type: "string" },
    callers: { type: "string" },
    revokes: { type: "string" },
  },
});
const SECONDS = Number(flags.seconds ?? 5);
const WARMUP = Number(flags.warmup ?? 1);
const KEYS = Number(flags.keys ?? 20);
const VERSIONS = Number(flags.versions ?? 5);
const MESSAGES = Number(flags.messages ?? 10_000);
const CALLERS = Number(flags.callers ?? 64);
const REVOKES = Number(flags.revokes ?? 5);
const REPO = fileURLToPath(new URL("..", import.meta.url));
const TENANT = "bench";
const CONTEXT = { table: "documents", column: "body", row: "1" };

interface ChildKms {
  readonly url: string;
  readonly tlsDir: string;
  readonly child: ChildProcess;
}

function startChildKms(): Promise<ChildKms> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(REPO, "bench/client/kms-child.ts")], { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] });
    let buffered = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const newline = buffered.indexOf("\n");
      if (newline >= 0) {
        const { url, tlsDir } = JSON.parse(buffered.slice(0, newline)) as { url: string; tlsDir: string };
        resolve({ url, tlsDir, child });
      }
    });
    child.once("exit", (code) => reject(new Error(`the KMS child exited (${code}) before it listened`)));
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });
}

function countingClient(kms: ChildKms): { client: KmsClient; counts: Record<string, number> } {
  const counts: Record<string, number> = {};
  const count: Interceptor = (next) => (req) => {
    counts[req.method.name] = (counts[req.method.name] ?? 0) + 1;
    return next(req);
  };
  const client = createKmsClient({
    transport: createKmsGrpcTransport({
      baseUrl: kms.url,
      tls: { ca: { path: join(kms.tlsDir, "ca.pem") }, cert: { path: join(kms.tlsDir, "client.pem") }, key: { path: join(kms.tlsDir, "client-key.pem") } },
      interceptors: [count],
    }),
    timeoutMs: 30_000,
  });
  return { client, counts };
}

const line = (label: string, value: string) => console.log(`  ${label.padEnd(66)} ${value}`);
const rate = (t: Throughput) => `${thousands(t.opsPerSecond).padStart(9)} ops/s  (${t.meanMicros.toFixed(1)} µs/op, ${thousands(t.operations)} ops)`;

async function main(): Promise<void> {
  console.log(`matih-kms client benchmark — Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`);
  console.log(`measuring ${SECONDS} s per figure after ${WARMUP} s of warm-up\n`);
  const kms = await startChildKms();
  try {
    const results = await run(kms);
    await mkdir(join(REPO, "bench/results"), { recursive: true });
    const file = join(REPO, "bench/results", `client-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    await writeFile(file, `${JSON.stringify(results, null, 2)}\n`);
    console.log(`\nwrote ${file}`);
  } finally {
    await stopChild(kms.child);
  }
}

async function run(kms: ChildKms) {
  const { client: admin } = countingClient(kms);
  const plaintext = randomBytes(1024);

  // ---------------------------------------------------------------- 1 + 2
  console.log("1 KiB messages, warm cache (one caller, back to back)");
  await admin.keys.createKey({ tenantId: TENANT, keyId: "warm" });
  const { client, counts } = countingClient(kms);
  const envelope = createEnvelopeEncryption({ kms: client, cache: { maxAgeMs: 5 * 60_000 } });
  // Entries fetched before the event stream is live only last the fallback age: start once it is.
  while (!envelope.stats().eventStream.live) await new Promise((resolve) => setTimeout(resolve, 10));
  const ciphertext = await envelope.encrypt(TENANT, "warm", plaintext, CONTEXT);
  if (!(await envelope.decrypt(ciphertext, CONTEXT)).equals(plaintext)) throw new Error("round trip failed");
  const rpcsBefore = { ...counts };
  const matihDecrypt = await throughput(() => envelope.decrypt(ciphertext, CONTEXT), SECONDS, WARMUP);
  const matihEncrypt = await throughput(() => envelope.encrypt(TENANT, "warm", plaintext, CONTEXT), SECONDS, WARMUP);
  const rpcsDuring = (counts["Decrypt"] ?? 0) - (rpcsBefore["Decrypt"] ?? 0) + (counts["GenerateDataKey"] ?? 0) - (rpcsBefore["GenerateDataKey"] ?? 0);
  await envelope.close();

  const aws: Record<string, { decrypt: Throughput; encrypt: Throughput; ciphertextBytes: number }> = {};
  for (const suite of ["default (commit + ECDSA P-384 signature)", "committing, no signature"] as AwsSuite[]) {
    const baseline = createAwsBaseline(suite);
    const awsCiphertext = await baseline.encrypt(plaintext, CONTEXT);
    if (!(await baseline.decrypt(awsCiphertext)).equals(plaintext)) throw new Error("AWS round trip failed");
    aws[suite] = {
      decrypt: await throughput(() => baseline.decrypt(awsCiphertext), SECONDS, WARMUP),
      encrypt: await throughput(() => baseline.encrypt(plaintext, CONTEXT), SECONDS, WARMUP),
      ciphertextBytes: awsCiphertext.length,
    };
  }
  const awsDefault = aws["default (commit + ECDSA P-384 signature)"] as (typeof aws)[string];
  const awsNoSig = aws["committing, no signature"] as (typeof aws)[string];
  const ratio = (a: Throughput, b: Throughput) => a.opsPerSecond / b.opsPerSecond;

  line("decrypt  matih envelope v1", rate(matihDecrypt));
  line("decrypt  AWS Encryption SDK, default suite", rate(awsDefault.decrypt));
  line("decrypt  AWS Encryption SDK, committing suite without signature", rate(awsNoSig.decrypt));
  line("encrypt  matih envelope v1", rate(matihEncrypt));
  line("encrypt  AWS Encryption SDK, default suite", rate(awsDefault.encrypt));
  line("encrypt  AWS Encryption SDK, committing suite without signature", rate(awsNoSig.encrypt));
  line("decrypt speed-up vs AWS default suite (target ≥ 3×)", `${ratio(matihDecrypt, awsDefault.decrypt).toFixed(1)}×  ${ratio(matihDecrypt, awsDefault.decrypt) >= 3 ? "MET" : "NOT MET"}`);
  line("decrypt speed-up vs AWS suite without signature (target ≥ 3×)", `${ratio(matihDecrypt, awsNoSig.decrypt).toFixed(1)}×  ${ratio(matihDecrypt, awsNoSig.decrypt) >= 3 ? "MET" : "NOT MET"}`);
  line("encrypt speed-up vs AWS default / without signature", `${ratio(matihEncrypt, awsDefault.encrypt).toFixed(1)}× / ${ratio(matihEncrypt, awsNoSig.encrypt).toFixed(1)}×`);
  line("ciphertext bytes for 1 KiB: matih / AWS default / AWS no signature", `${ciphertext.length} / ${awsDefault.ciphertextBytes} / ${awsNoSig.ciphertextBytes}`);
  line("KMS RPCs made while measuring (warm cache)", String(rpcsDuring));

  // ---------------------------------------------------------------- 3
  const deks = KEYS * VERSIONS;
  console.log(`\ncold cache: ${thousands(MESSAGES)} decrypts over ${deks} DEKs (${KEYS} keys × ${VERSIONS} versions), ${CALLERS} concurrent callers`);
  const writer = createEnvelopeEncryption({ kms: admin, cache: { maxAgeMs: 60_000, events: false } });
  const perDek = Math.ceil(MESSAGES / deks);
  const ciphertexts: Buffer[] = [];
  const keyIds = Array.from({ length: KEYS }, (_, i) => `cold-${i}`);
  await Promise.all(keyIds.map((keyId) => admin.keys.createKey({ tenantId: TENANT, keyId })));
  for (let version = 1; version <= VERSIONS; version++) {
    for (const keyId of keyIds) {
      for (let i = 0; i < perDek && ciphertexts.length < MESSAGES; i++) ciphertexts.push(await writer.encrypt(TENANT, keyId, randomBytes(1024), { n: String(ciphertexts.length) }));
    }
    if (version < VERSIONS) await Promise.all(keyIds.map((keyId) => admin.keys.rotateKey({ tenantId: TENANT, keyId })));
    writer.cache.clear();
  }
  await writer.close();
  const work = shuffle(ciphertexts.map((c, n) => ({ c, n })));
  const { client: coldClient, counts: coldCounts } = countingClient(kms);
  const reader = createEnvelopeEncryption({ kms: coldClient, cache: { maxAgeMs: 60_000 } });
  let next = 0;
  let decrypted = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (next < work.length) {
        const { c, n } = work[next++] as { c: Buffer; n: number };
        await reader.decrypt(c, { n: String(n) });
        decrypted++;
      }
    }),
  );
  const coldSeconds = (performance.now() - started) / 1000;
  const coldStats = reader.stats();
  await reader.close();
  const decryptRpcs = coldCounts["Decrypt"] ?? 0;
  line("decrypts completed", thousands(decrypted));
  line("Decrypt RPCs made (must be exactly the number of DEKs)", `${decryptRpcs}  ${decryptRpcs === deks ? "PASS" : "FAIL"} (expected ${deks})`);
  line("cache: misses / coalesced / hits / RPCs saved", `${coldStats.misses} / ${coldStats.coalesced} / ${thousands(coldStats.hits)} / ${thousands(coldStats.rpcsSaved)}`);
  line("wall time", `${(coldSeconds * 1000).toFixed(0)} ms (${thousands(decrypted / coldSeconds)} decrypts/s)`);

  // ---------------------------------------------------------------- 4
  console.log(`\nrevocation: RevokeKey → first refused local decrypt (WatchKeyEvents, ${REVOKES} runs)`);
  const delays: number[] = [];
  for (let i = 0; i < REVOKES; i++) {
    const keyId = `revoke-${i}`;
    await admin.keys.createKey({ tenantId: TENANT, keyId });
    const watched = createEnvelopeEncryption({ kms: admin, cache: { maxAgeMs: 5 * 60_000 } });
    const c = await watched.encrypt(TENANT, keyId, plaintext, CONTEXT);
    while (!watched.stats().eventStream.live) await new Promise((resolve) => setTimeout(resolve, 10));
    await watched.decrypt(c, CONTEXT);
    const t0 = performance.now();
    await admin.keys.revokeKey({ tenantId: TENANT, keyId });
    for (;;) {
      try {
        await watched.decrypt(c, CONTEXT);
        await new Promise((resolve) => setImmediate(resolve));
      } catch (error) {
        if (!(error instanceof KmsError)) throw error;
        break;
      }
      if (performance.now() - t0 > 30_000) throw new Error("revocation never arrived");
    }
    delays.push(performance.now() - t0);
    await watched.close();
  }
  const sorted = [...delays].sort((a, b) => a - b);
  line("delays (ms)", delays.map((d) => d.toFixed(0)).join(", "));
  line("median / max (target < 1,000 ms)", `${(sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(0)} / ${(sorted.at(-1) ?? 0).toFixed(0)} ms  ${(sorted.at(-1) ?? Infinity) < 1000 ? "MET" : "NOT MET"}`);

  return {
    when: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    settings: { seconds: SECONDS, warmup: WARMUP, keys: KEYS, versions: VERSIONS, messages: MESSAGES, callers: CALLERS },
    warm: {
      matih: { decrypt: matihDecrypt, encrypt: matihEncrypt, ciphertextBytes: ciphertext.length, rpcsWhileMeasuring: rpcsDuring },
      aws,
      decryptSpeedup: { vsDefault: ratio(matihDecrypt, awsDefault.decrypt), vsNoSignature: ratio(matihDecrypt, awsNoSig.decrypt) },
      encryptSpeedup: { vsDefault: ratio(matihEncrypt, awsDefault.encrypt), vsNoSignature: ratio(matihEncrypt, awsNoSig.encrypt) },
    },
    coldCache: { deks, decrypts: decrypted, callers: CALLERS, decryptRpcs, pass: decryptRpcs === deks, milliseconds: coldSeconds * 1000, stats: { misses: coldStats.misses, coalesced: coldStats.coalesced, hits: coldStats.hits, rpcsSaved: coldStats.rpcsSaved } },
    revocation: { delaysMs: delays, medianMs: sorted[Math.floor(sorted.length / 2)], maxMs: sorted.at(-1) },
  };
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
